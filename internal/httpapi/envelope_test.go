package httpapi

import (
	"strings"
	"testing"
)

// What delivery encodes, every receiver (the cache role, the bot simulator) decodes back to the same
// shard and the same payload bytes, one envelope or a batch.
func TestEnvelopesDecodeWhatDeliveryEncodes(t *testing.T) {
	payloads := []string{`{"op":0,"t":"MESSAGE_CREATE","s":1,"d":{"content":"a ]} \" b"}}`, `{"op":0,"t":"X","s":2,"d":null}`}
	one := AppendEnvelope(nil, 7, []byte(payloads[0]))
	if string(one) != `{"shardId":7,"payload":`+payloads[0]+`}` {
		t.Fatalf("encoded %s", one)
	}
	envs, err := DecodeEnvelopes(one)
	if err != nil || len(envs) != 1 || envs[0].ShardID != 7 || string(envs[0].Payload) != payloads[0] {
		t.Fatalf("decoded one: %+v, %v", envs, err)
	}
	batch := []byte(" [")
	for i, p := range payloads {
		if i > 0 {
			batch = append(batch, ',')
		}
		batch = AppendEnvelope(batch, 1000+i, []byte(p))
	}
	batch = append(batch, ']')
	envs, err = DecodeEnvelopes(batch)
	if err != nil || len(envs) != 2 {
		t.Fatalf("decoded a batch: %+v, %v", envs, err)
	}
	for i, e := range envs {
		if e.ShardID != 1000+i || string(e.Payload) != payloads[i] {
			t.Errorf("envelope %d: shard %d payload %s", i, e.ShardID, e.Payload)
		}
	}
}

func TestEnvelopesWithoutShardOrPayloadObjectAreRefused(t *testing.T) {
	for _, body := range []string{``, `nope`, `{"payload":{"op":0}}`, `[{"shardId":0}]`, `{"shardId":"1","payload":{}}`,
		`{"shardId":1,"payload":[1]}`, `[{"shardId":1,"payload":{}},{"shardId":2}]`, `[{"shardId":1,"payload":{}}`} {
		if envs, err := DecodeEnvelopes([]byte(body)); err == nil {
			t.Errorf("%s decoded to %+v, want an error", body, envs)
		} else if !strings.Contains(err.Error(), "envelope") {
			t.Errorf("%s: error %q does not say what was wrong", body, err)
		}
	}
}
