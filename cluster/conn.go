package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"os"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// The key-value buckets dd keeps, each named <Options.Name>_<kind>.
const (
	BucketLeases   = "leases"   // who owns what: shards, the rest leader
	BucketSessions = "sessions" // each shard's session id, resume URL and sequence
	BucketIdentify = "identify" // the identify queue: one key a max_concurrency bucket, and the daily budget
	BucketTarget   = "target"   // the shard count a reshard is heading for
)

// bucketKinds lists the buckets Connect creates. Leases and the identify queue expire keys by TTL, which
// JetStream allows only on buckets made for it.
var bucketKinds = []struct {
	kind string
	ttl  bool
}{{BucketLeases, true}, {BucketSessions, false}, {BucketIdentify, true}, {BucketTarget, false}}

// markerTTL is how long a key that expired stays visible as a marker: watchers learn of the expiry, and
// the identify limiter learns when a dead holder's turn ran out (it must outlive an identify window).
const markerTTL = time.Minute

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Options configures Connect. Every field has a default.
type Options struct {
	// URL lists the NATS servers, comma-separated ("nats://h1:4222,nats://h2:4222"). Default
	// nats.DefaultURL (nats://127.0.0.1:4222).
	URL string
	// Name prefixes every bucket (and later stream and subject), so that several bots can share one NATS:
	// letters, digits, '-' and '_', at most 32. Default "dd".
	Name string
	// Instance names this process in leases and in NATS's connection list. Default hostname + a random
	// suffix.
	Instance string
	// Replicas is how many NATS servers keep each bucket: 1 on a single server, 3 on a cluster of three
	// or more (a bucket then survives the loss of one server). Default 1.
	Replicas int
	// Timeout bounds each request to NATS made while connecting. Default 10 s.
	Timeout time.Duration
	// CredsFile is a NATS credentials file (cluster.nats_creds); TLSCAFile a PEM file of the CAs of the
	// servers' certificates (cluster.nats_tls_ca). Default none: a user and password or a token may be
	// in URL.
	CredsFile, TLSCAFile string
	// NATSOptions are passed to nats.Connect after dd's own (credentials, TLS, ...).
	NATSOptions []nats.Option
	// Log receives connection changes. Default: none.
	Log *zap.Logger
}

// Conn is one process's connection to NATS and its buckets.
type Conn struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	name     string
	instance string
	replicas int
	log      *zap.Logger
	buckets  map[string]jetstream.KeyValue
}

// Connect connects to NATS and creates (or updates to these options) dd's buckets. It fails when no
// server answers; once connected, the connection reconnects forever, and every operation made while
// NATS is unreachable fails until it is back. Close it when done.
func Connect(ctx context.Context, o Options) (*Conn, error) {
	if o.URL == "" {
		o.URL = nats.DefaultURL
	}
	if o.Name == "" {
		o.Name = "dd"
	}
	if !namePattern.MatchString(o.Name) {
		return nil, fmt.Errorf("cluster: name %q: use 1 to 32 letters, digits, '-' or '_'", o.Name)
	}
	if o.Instance == "" {
		o.Instance = defaultInstance()
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		return nil, fmt.Errorf("cluster: replicas %d: JetStream keeps 1 to 5", o.Replicas)
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	log := o.Log.With(zap.String("instance", o.Instance))
	opts := []nats.Option{
		nats.Name(o.Name + "/" + o.Instance),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// Each connection attempt (dial and handshake) gets nats.go's default 2 s, not Timeout: after a
		// partition, an attempt that reached a proxy or a half-open route waits for nothing for that long
		// before the next one, and a gateway waits for it to read its shards again.
		nats.Timeout(min(o.Timeout, 2*time.Second)),
		// A server that stops answering (a partition rather than a closed socket) is noticed within
		// about 10 s; leases do not wait for that, they count their own deadline.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("disconnected from NATS; reconnecting", zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
	}
	if o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(o.TLSCAFile))
	}
	opts = append(opts, o.NATSOptions...)
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connecting to NATS at %s: %w", redactURLs(o.URL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	c := &Conn{nc: nc, js: js, name: o.Name, instance: o.Instance, replicas: o.Replicas, log: log,
		buckets: map[string]jetstream.KeyValue{}}
	for _, b := range bucketKinds {
		kv, err := c.ensureBucket(ctx, b.kind, b.ttl, o.Timeout)
		if err != nil {
			nc.Close()
			return nil, err
		}
		c.buckets[b.kind] = kv
	}
	log.Info("connected to NATS", zap.String("server", nc.ConnectedUrlRedacted()), zap.Int("replicas", o.Replicas))
	return c, nil
}

// ensureBucket finds the bucket, or creates it, or brings it to this configuration (replicas, marker
// TTL). It looks before it creates: several processes starting together on a NATS cluster each asking
// to create the same bucket left one request unanswered until its timeout (10 s and more of a start on
// three nodes). The loser of a creation race finds the bucket on its next look.
func (c *Conn) ensureBucket(ctx context.Context, kind string, ttl bool, timeout time.Duration) (jetstream.KeyValue, error) {
	cfg := jetstream.KeyValueConfig{
		Bucket:      c.BucketName(kind),
		Description: "dd " + kind + " (cluster mode)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    c.replicas,
	}
	if ttl {
		cfg.LimitMarkerTTL = markerTTL
	}
	var err error
	for attempt := 0; attempt < 8; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		var kv jetstream.KeyValue
		kv, err = c.lookOrCreateBucket(rctx, cfg)
		cancel()
		if err == nil {
			return kv, nil
		}
		c.log.Debug("bucket not ready yet; retrying", zap.String("bucket", cfg.Bucket), zap.Int("attempt", attempt+1), zap.Error(err))
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1)*200*time.Millisecond + time.Duration(mathrand.N(200))*time.Millisecond):
		}
	}
	return nil, fmt.Errorf("cluster: creating KV bucket %s (replicas %d): %w", cfg.Bucket, c.replicas, err)
}

func (c *Conn) lookOrCreateBucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := c.js.KeyValue(ctx, cfg.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		kv, err = c.js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			return c.js.KeyValue(ctx, cfg.Bucket)
		}
		return kv, err
	case err != nil:
		return nil, err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, err
	}
	if info := st.(*jetstream.KeyValueBucketStatus).StreamInfo(); info.Config.Replicas != cfg.Replicas ||
		st.(*jetstream.KeyValueBucketStatus).LimitMarkerTTL() != cfg.LimitMarkerTTL {
		c.log.Info("bringing a bucket to this configuration", zap.String("bucket", cfg.Bucket), zap.Int("replicas", cfg.Replicas))
		return c.js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	return kv, nil
}

// BucketName is the full name of a bucket kind (BucketLeases, ...): "dd_leases".
func (c *Conn) BucketName(kind string) string { return c.name + "_" + kind }

// KV is the bucket of a kind (BucketLeases, ...).
func (c *Conn) KV(kind string) jetstream.KeyValue { return c.buckets[kind] }

// Instance is this process's name in the deployment.
func (c *Conn) Instance() string { return c.instance }

// Name is the deployment's name, the prefix of its buckets.
func (c *Conn) Name() string { return c.name }

// NATS is the underlying connection.
func (c *Conn) NATS() *nats.Conn { return c.nc }

// JetStream is the connection's JetStream context.
func (c *Conn) JetStream() jetstream.JetStream { return c.js }

// Connected reports whether the connection is up now (for /readyz).
func (c *Conn) Connected() bool { return c.nc.IsConnected() }

// Close closes the connection. Leases still held are not released: they expire at the server after
// their TTL, as a crashed process's would; release them first.
func (c *Conn) Close() { c.nc.Close() }

func defaultInstance() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "dd"
	}
	return host + "-" + randomHex(3)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b)
}

// redactURLs hides passwords in a server list for error messages.
func redactURLs(list string) string {
	return userinfoPattern.ReplaceAllString(list, "://$1:xxxxx@")
}

var userinfoPattern = regexp.MustCompile(`://([^:/@,]*):[^@/,]*@`)
