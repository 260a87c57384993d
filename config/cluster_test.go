package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const clusterTOML = "[discord]\ntoken = \"test-token-0123456789\"\n[cluster]\nnats_url = \"nats://127.0.0.1:4222\"\n"

func TestClusterKeysDecodeWithTheirDefaults(t *testing.T) {
	cfg, err := load(t, clusterTOML, nil, RoleGateway)
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.Cluster
	if k.NATSURL != "nats://127.0.0.1:4222" || k.Name != "dd" || k.Instance != "" || k.LeaseTTL != 10*time.Second || k.Replicas != 1 {
		t.Fatalf("cluster defaults wrong: %+v", k)
	}
	cfg, err = load(t, clusterTOML, []string{"DD_CLUSTER__LEASE_TTL=3s", "DD_CLUSTER__NAME=bot2", "DD_CLUSTER__REPLICAS=3"}, RoleGateway)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.LeaseTTL != 3*time.Second || cfg.Cluster.Name != "bot2" || cfg.Cluster.Replicas != 3 {
		t.Fatalf("cluster values from the environment wrong: %+v", cfg.Cluster)
	}
}

// TestClusterGatewayRefusesWhatItDoesNotDoYet: the gateway of cluster mode has no Redis sink, no member
// requests of its own and no split by cluster_id; a config asking for one is refused, naming the key,
// rather than run without it. The same keys are fine without cluster mode, or for a role without a
// gateway.
func TestClusterGatewayRefusesWhatItDoesNotDoYet(t *testing.T) {
	cases := map[string]string{
		"events.sink":           "[events]\nsink = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"\n",
		"cache.request_members": "[cache]\nrequest_members = \"all\"\n[gateway]\nintents = [\"Guilds\", \"GuildMembers\"]\n",
		"gateway.clusters":      "[gateway]\nclusters = 2\ncluster_id = 1\n",
		"cluster.lease_ttl":     "[cluster]\nlease_ttl = \"1s\"\n",
		"cluster.replicas":      "[cluster]\nreplicas = 2\n",
		"cluster.name":          "[cluster]\nname = \"a.b\"\n",
	}
	for key, extra := range cases {
		toml := clusterTOML
		if strings.HasPrefix(extra, "[cluster]") {
			toml = strings.Replace(clusterTOML, "[cluster]\n", extra, 1)
		} else {
			toml += extra
		}
		for _, role := range []Role{RoleGateway, RoleAll} {
			if role == RoleAll && strings.HasPrefix(key, "cluster.") {
				continue
			}
			_, err := load(t, toml, []string{"DD_CLUSTER__ADVERTISE_URL=http://127.0.0.1:8000"}, role)
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("--role=%s with %q: want an error naming %s, got %v", role, extra, key, err)
			}
		}
		if strings.HasPrefix(key, "cluster.") {
			continue
		}
		if _, err := load(t, "[discord]\ntoken = \"test-token-0123456789\"\n"+extra, nil, RoleGateway); err != nil {
			t.Errorf("without cluster mode %q is fine, got %v", extra, err)
		}
		if _, err := load(t, toml, nil, RoleCache); err != nil && strings.Contains(err.Error(), key) {
			t.Errorf("--role=cache in cluster mode: %s refused: %v", key, err)
		}
	}
}

func TestClusterCredentialFilesMustExist(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "dd.creds")
	if err := os.WriteFile(creds, []byte("-----BEGIN NATS USER JWT-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := load(t, clusterTOML, []string{"DD_CLUSTER__NATS_CREDS=" + creds}, RoleGateway)
	if err != nil || cfg.Cluster.NATSCreds != creds || cfg.Cluster.NATSTLSCA != "" {
		t.Fatalf("nats_creds %q: %+v, %v", creds, cfg.Cluster, err)
	}
	for key, env := range map[string]string{"cluster.nats_creds": "DD_CLUSTER__NATS_CREDS=" + filepath.Join(dir, "missing.creds"),
		"cluster.nats_tls_ca": "DD_CLUSTER__NATS_TLS_CA=" + dir} {
		if _, err := load(t, clusterTOML, []string{env}, RoleGateway); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: want an error naming %s, got %v", env, key, err)
		}
	}
}

// TestClusterEventsURLsMayBeEmpty: in cluster mode an empty events.urls means dd does not deliver (the
// bot reads the stream itself), for a file's urls = [] as for an empty DD_EVENTS__URLS; without cluster
// mode the gateway still needs a URL to deliver to.
func TestClusterEventsURLsMayBeEmpty(t *testing.T) {
	for _, role := range []Role{RoleGateway, RoleAll} {
		cfg, err := load(t, clusterTOML+"[events]\nurls = []\n", []string{"DD_CLUSTER__ADVERTISE_URL=http://127.0.0.1:8000"}, role)
		if err != nil || len(cfg.Events.URLs) != 0 {
			t.Errorf("--role=%s in cluster mode with urls = []: %v, urls %q; want no error and no URL", role, err, cfg.Events.URLs)
		}
		cfg, err = load(t, clusterTOML, []string{"DD_EVENTS__URLS=", "DD_CLUSTER__ADVERTISE_URL=http://127.0.0.1:8000"}, role)
		if err != nil || len(cfg.Events.URLs) != 0 {
			t.Errorf("--role=%s in cluster mode with DD_EVENTS__URLS empty: %v, urls %q; want no error and no URL", role, err, cfg.Events.URLs)
		}
		oneMachine := "[discord]\ntoken = \"test-token-0123456789\"\n[events]\nurls = []\n"
		if _, err := load(t, oneMachine, nil, role); err == nil || !strings.Contains(err.Error(), "events.urls") {
			t.Errorf("--role=%s without cluster mode, urls = []: %v; want an error naming events.urls", role, err)
		}
	}
}
