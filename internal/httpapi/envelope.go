package httpapi

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/ddhq/dd/internal/rawjson"
)

// Envelope is one event as dd delivers it (to the bot, to the cache role, on NATS): Discordeno's big-bot
// {"shardId":N,"payload":{"op":0,"t":...,"s":...,"d":...}}.
type Envelope struct {
	ShardID int
	Payload []byte // the gateway payload's raw bytes, as they were encoded
}

// AppendEnvelope appends the envelope {"shardId":N,"payload":<payload>} to b, the payload's bytes copied
// as they are.
func AppendEnvelope(b []byte, shard int, payload []byte) []byte {
	b = append(b, `{"shardId":`...)
	b = strconv.AppendInt(b, int64(shard), 10)
	b = append(b, `,"payload":`...)
	b = append(b, payload...)
	return append(b, '}')
}

// DecodeEnvelopes reads a body of one envelope or a JSON array of them (what delivery posts with
// events.batch_max above 1). Each needs an integer shardId and an object payload. The payloads are slices
// of body, not copies. It finds the envelope's fields without decoding the payloads (a receiver that
// shares a host with dd should cost little), so it does not check that a payload's inside is valid JSON:
// a receiver that stores payloads checks that first (json.Valid).
func DecodeEnvelopes(body []byte) ([]Envelope, error) {
	i := 0
	for i < len(body) && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t') {
		i++
	}
	if i == len(body) || body[i] != '[' {
		env, err := decodeEnvelope(body)
		if err != nil {
			return nil, err
		}
		return []Envelope{env}, nil
	}
	var envs []Envelope
	var err error
	if e := rawjson.EachElement(body, func(v []byte) bool {
		var env Envelope
		if env, err = decodeEnvelope(v); err != nil {
			err = fmt.Errorf("envelope %d: %w", len(envs), err)
			return false
		}
		envs = append(envs, env)
		return true
	}); e != nil && err == nil {
		err = fmt.Errorf("not a JSON array of envelopes: %w", e)
	}
	if err != nil {
		return nil, err
	}
	return envs, nil
}

var errNotEnvelope = errors.New(`not an envelope {"shardId":N,"payload":{...}}`)

func decodeEnvelope(b []byte) (Envelope, error) {
	var env Envelope
	var shard, payload []byte
	if err := rawjson.EachField(b, func(k, v []byte) bool {
		switch string(k) {
		case "shardId":
			shard = v
		case "payload":
			payload = v
		}
		return true
	}); err != nil {
		return env, fmt.Errorf("%w: %.100s", errNotEnvelope, b)
	}
	n, ok := rawjson.Int(shard)
	if !ok || len(payload) == 0 || payload[0] != '{' {
		return env, fmt.Errorf("%w (an integer shardId and an object payload): %.100s", errNotEnvelope, b)
	}
	env.ShardID, env.Payload = int(n), payload
	return env, nil
}
