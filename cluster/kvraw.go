package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The lease and identify keys are read and written below the KV API: a lease needs the revision and
// server timestamp of a key's delete or expiry marker (the KV API hides deleted keys), a TTL on every
// write (the KV API allows one only on Create), and reads answered by the stream's leader (a KV Get may
// be answered by a replica that is behind).

// rawKV is one KV bucket seen as its stream.
type rawKV struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	bucket  string
	subject string // "$KV.<bucket>."
	apiGet  string // the stream's leader-answered message get
}

func newRawKV(c *Conn, kind string) *rawKV {
	b := c.BucketName(kind)
	return &rawKV{nc: c.nc, js: c.js, bucket: b, subject: "$KV." + b + ".", apiGet: "$JS.API.STREAM.MSG.GET.KV_" + b}
}

// rawEntry is a key's last message.
type rawEntry struct {
	Revision uint64    // 0: the key never existed, or its marker is gone too
	Written  time.Time // the server's timestamp of the write (zero when Revision is 0)
	Deleted  bool      // a delete or purge marker: no value
	Expired  bool      // the marker the server wrote when the value's TTL ran out
	Value    []byte
}

// errCASConflict is a write refused because the key's revision was not the expected one.
var errCASConflict = errors.New("cluster: the key changed since it was read")

// last reads a key's last message from the stream's leader.
func (r *rawKV) last(ctx context.Context, key string) (rawEntry, error) {
	return r.get(ctx, map[string]any{"last_by_subj": r.subject + key})
}

// at reads the message at a revision from the stream's leader (it must be key's).
func (r *rawKV) at(ctx context.Context, key string, rev uint64) (rawEntry, error) {
	e, err := r.get(ctx, map[string]any{"seq": rev})
	if err == nil && e.Revision == 0 {
		return e, fmt.Errorf("cluster: revision %d of %s/%s is gone", rev, r.bucket, key)
	}
	return e, err
}

func (r *rawKV) get(ctx context.Context, req map[string]any) (rawEntry, error) {
	body, _ := json.Marshal(req)
	msg, err := r.nc.RequestWithContext(ctx, r.apiGet, body)
	if err != nil {
		return rawEntry{}, fmt.Errorf("cluster: reading %s: %w", r.bucket, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return rawEntry{}, fmt.Errorf("cluster: reading %s: %w", r.bucket, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return rawEntry{}, nil
		}
		return rawEntry{}, fmt.Errorf("cluster: reading %s: %w", r.bucket, resp.Error)
	}
	if resp.Message == nil {
		return rawEntry{}, fmt.Errorf("cluster: reading %s: empty answer", r.bucket)
	}
	m := resp.Message
	e := rawEntry{Revision: m.Sequence, Written: m.Time, Value: m.Data}
	if len(m.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(m.Header)
		if err != nil {
			return rawEntry{}, fmt.Errorf("cluster: reading %s: headers: %w", r.bucket, err)
		}
		switch {
		case h.Get("KV-Operation") == "DEL" || h.Get("KV-Operation") == "PURGE":
			e.Deleted = true
		case h.Get(jetstream.MarkerReasonHeader) != "":
			e.Deleted = true
			e.Expired = h.Get(jetstream.MarkerReasonHeader) == "MaxAge"
		}
	}
	if e.Deleted {
		e.Value = nil
	}
	return e, nil
}

// put writes value if the key's last revision is still last (0: the key has no message), with a TTL
// after which the server removes it (0: none). The TTL is rounded up to whole seconds, the server's unit,
// so that the server never expires a key sooner than asked.
func (r *rawKV) put(ctx context.Context, key string, value []byte, last uint64, ttl time.Duration) (uint64, error) {
	m := &nats.Msg{Subject: r.subject + key, Data: value, Header: nats.Header{}}
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(last)}
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ceilSeconds(ttl)))
	}
	ack, err := r.js.PublishMsg(ctx, m, opts...)
	if err != nil {
		if isWrongLastSeq(err) {
			return 0, errCASConflict
		}
		return 0, fmt.Errorf("cluster: writing %s/%s: %w", r.bucket, key, err)
	}
	return ack.Sequence, nil
}

// del places a delete marker if the key's last revision is still last.
func (r *rawKV) del(ctx context.Context, key string, last uint64) error {
	m := &nats.Msg{Subject: r.subject + key, Header: nats.Header{}}
	m.Header.Set("KV-Operation", "DEL")
	_, err := r.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(last))
	if err != nil {
		if isWrongLastSeq(err) {
			return errCASConflict
		}
		return fmt.Errorf("cluster: deleting %s/%s: %w", r.bucket, key, err)
	}
	return nil
}

// ceilSeconds rounds d up to whole seconds.
func ceilSeconds(d time.Duration) time.Duration {
	return (d + time.Second - 1) / time.Second * time.Second
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
