package restproxy

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ddhq/dd/cluster"
)

// leaderData is what the rest leader publishes in its lease: where followers forward.
type leaderData struct {
	URL string `json:"url"` // cluster.advertise_url
}

// NATSCluster is the Cluster of cluster mode on conn: one election per token in the leases bucket
// (cluster.BucketLeases, leases of leaseTTL), publishing advertiseURL while this process leads. Its Close
// releases what this process leads and closes conn.
func NATSCluster(conn *cluster.Conn, leaseTTL time.Duration, advertiseURL string, log *zap.Logger) (*Cluster, error) {
	if log == nil {
		log = zap.NewNop()
	}
	leaser, err := cluster.NewLeaser(conn, cluster.BucketLeases, cluster.LeaseConfig{TTL: leaseTTL, Log: log.Named("rest-leader")})
	if err != nil {
		return nil, err
	}
	data, _ := json.Marshal(leaderData{URL: advertiseURL})
	var mu sync.Mutex
	var elections []*cluster.Election
	return &Cluster{
		Elect: func(key string) Election {
			e := leaser.Elect(key, data)
			mu.Lock()
			elections = append(elections, e)
			mu.Unlock()
			return natsElection{e}
		},
		Close: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			mu.Lock()
			defer mu.Unlock()
			for _, e := range elections {
				if err := e.Close(ctx); err != nil {
					log.Warn("releasing the rest leadership", zap.Error(err))
				}
			}
			conn.Close()
		},
	}, nil
}

// natsElection is a cluster.Election as the proxy reads it: the leader's URL from its published data.
type natsElection struct{ e *cluster.Election }

func (n natsElection) Term() Term {
	t := n.e.Term()
	rt := Term{Leading: t.Leading(), N: t.N, Changed: t.Changed}
	if t.Lease != nil {
		rt.Done = t.Lease.Done()
	} else if t.Data != nil {
		var d leaderData
		if json.Unmarshal(t.Data, &d) == nil {
			rt.Leader = d.URL
		}
	}
	return rt
}
