package config

import (
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

var clusterNamePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// validateCluster checks the [cluster] keys (cluster mode on NATS).
func (c *Config) validateCluster(role Role, bad func(key, format string, args ...any)) {
	k := c.Cluster
	if k.NATSURL == "" {
		return
	}
	for _, s := range strings.Split(k.NATSURL, ",") {
		s = strings.TrimSpace(s)
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") {
			bad("cluster.nats_url", "%s is not a NATS server URL: want nats://host:4222 (or tls://, ws://, wss://), several comma-separated", quoteURL(s))
		}
	}
	if !clusterNamePattern.MatchString(k.Name) {
		bad("cluster.name", "%q: use 1 to 32 letters, digits, '-' or '_' (it prefixes NATS buckets)", k.Name)
	}
	if k.LeaseTTL < 2*time.Second || k.LeaseTTL > 5*time.Minute {
		bad("cluster.lease_ttl", "must be between 2s and 5m (NATS counts TTLs in whole seconds), got %s", k.LeaseTTL)
	}
	if k.Replicas != 1 && k.Replicas != 3 {
		bad("cluster.replicas", "must be 1 (one NATS server) or 3 (a NATS cluster), got %d", k.Replicas)
	}
	for _, f := range []struct{ key, path string }{{"cluster.nats_creds", k.NATSCreds}, {"cluster.nats_tls_ca", k.NATSTLSCA}} {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(f.path); err != nil || st.IsDir() {
			bad(f.key, "%q is not a readable file", f.path)
		}
	}
	if role.Runs(RoleGateway) {
		// What the gateway of cluster mode does not do yet: refused rather than silently ignored.
		if c.Events.Sink == "redis" {
			bad("events.sink", "\"redis\" is not available in cluster mode yet: use \"http\" (events.urls, delivered from the NATS stream) or read the stream %s_EVENTS directly", strings.ToUpper(k.Name))
		}
		if c.Cache.RequestMembers != "off" && c.Cache.RequestMembers != "none" && c.Cache.RequestMembers != "" {
			bad("cache.request_members", "%q is not available in cluster mode yet: set it to \"off\"", c.Cache.RequestMembers)
		}
		if c.Gateway.Clusters > 1 {
			bad("gateway.clusters", "%d: in cluster mode the gateway processes share the shards through NATS; leave clusters at 1 (or give each process first_shard/last_shard)", c.Gateway.Clusters)
		}
	}
	if role.Runs(RoleRest) {
		if k.AdvertiseURL == "" {
			bad("cluster.advertise_url", "must be set for --role=%s in cluster mode: how the other dd rest processes reach this one's rest.listen, e.g. \"http://10.0.0.5:8000\"", role)
		} else if err := checkURL(k.AdvertiseURL, false); err != nil {
			bad("cluster.advertise_url", "%v", err)
		}
	}
}
