package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddhq/dd/cluster/clustertest"
)

func TestConnectCreatesBucketsOnceForEveryProcess(t *testing.T) {
	s := clustertest.Server(t)
	// Processes starting together race to create the buckets; each must end up with them.
	var wg sync.WaitGroup
	conns := make([]*Conn, 4)
	errs := make([]error, 4)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], errs[i] = Connect(context.Background(), Options{URL: s.ClientURL()})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("process %d: %v", i, err)
		}
		defer conns[i].Close()
	}
	c := conns[0]
	if c.Instance() == "" || c.Instance() == conns[1].Instance() {
		t.Errorf("instances %q and %q: want distinct default names", c.Instance(), conns[1].Instance())
	}
	for _, kind := range []string{BucketLeases, BucketSessions, BucketIdentify, BucketTarget} {
		st, err := c.KV(kind).Status(context.Background())
		if err != nil {
			t.Fatalf("bucket %s: %v", kind, err)
		}
		if st.Bucket() != "dd_"+kind {
			t.Errorf("bucket %s is named %q, want dd_%s", kind, st.Bucket(), kind)
		}
	}
	// Another bot on the same NATS gets its own buckets.
	o2, err := Connect(context.Background(), Options{URL: s.ClientURL(), Name: "bot2"})
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Close()
	if got := o2.BucketName(BucketLeases); got != "bot2_leases" {
		t.Errorf("bucket name %q, want bot2_leases", got)
	}
	if _, err := o2.KV(BucketLeases).Status(context.Background()); err != nil {
		t.Errorf("bot2_leases: %v", err)
	}
	if _, err := Connect(context.Background(), Options{URL: s.ClientURL(), Name: "bad.name"}); err == nil {
		t.Error("name with a dot accepted; want an error naming it")
	}
	// One server cannot keep three replicas: the error says which bucket and how many.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = Connect(ctx, Options{URL: s.ClientURL(), Name: "r3", Replicas: 3, Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "replicas 3") {
		t.Errorf("replicas 3 on one server: err %v, want one naming the replicas", err)
	}
}

func TestConnectFailsWithoutServer(t *testing.T) {
	_, err := Connect(context.Background(), Options{URL: "nats://127.0.0.1:1", Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("err %v, want a connection error naming the URL", err)
	}
	_, err = Connect(context.Background(), Options{URL: "nats://u:secretpw@127.0.0.1:1", Timeout: time.Second})
	if err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Fatalf("err %v, want one without the password", err)
	}
}

// A credentials file NATS cannot use fails the connection, naming it; a server that needs none is not
// reached without it.
func TestConnectWithABadCredentialsFileFails(t *testing.T) {
	url := clustertestServer(t)
	creds := filepath.Join(t.TempDir(), "dd.creds")
	if err := os.WriteFile(creds, []byte("not a credentials file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 10*time.Second)
	if c, err := Connect(ctx, Options{URL: url, CredsFile: creds, Timeout: 2 * time.Second}); err == nil {
		c.Close()
		t.Fatal("connected with a credentials file that holds no JWT")
	}
	c, err := Connect(ctx, Options{URL: url, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
