package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/internal/httpapi"
	"github.com/ddhq/dd/shard"
)

const maxCommandBody = 64 << 10

// ShardSet is what the gateway's command endpoints need of the shards this process runs: a
// shard.Manager in one-machine mode, the shards a process holds in cluster mode.
type ShardSet interface {
	Shard(id int) *shard.Shard // nil when the shard does not run here
	Shards() []*shard.Shard
	ShardForGuild(guildID uint64) int
}

// CommandHandler serves the endpoints that send gateway commands to shards (README, "The gateway role"):
// POST / (the messages of Discordeno's big-bot template) and POST /shards/{id}/send, to the set that
// shards returns (nil before the shards start: 503). Every other request is answered 404. It does not check who asks
// (the caller wraps it in its secret check) and does not listen (the role's server does).
func CommandHandler(shards func() ShardSet, log *zap.Logger) http.Handler {
	mux := http.NewServeMux()
	c := shardCommands{shards: shards, log: log}
	mux.HandleFunc("POST /{$}", c.handleDiscordeno)
	mux.HandleFunc("POST /shards/{id}/send", c.handleShardSend)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no gateway endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

type shardCommands struct {
	shards func() ShardSet // nil before the shards start
	log    *zap.Logger
}

func (c shardCommands) manager(w http.ResponseWriter) ShardSet {
	m := c.shards()
	if m == nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, "shards are not started yet")
		return nil
	}
	return m
}

// sendCommand sends one {op,d} payload to a shard and answers for it: 204 once sent.
func (c shardCommands) sendCommand(w http.ResponseWriter, r *http.Request, m ShardSet, id int, payload json.RawMessage) {
	s := m.Shard(id)
	if s == nil {
		httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("shard %d does not run in this process", id))
		return
	}
	var cmd struct {
		Op *int            `json:"op"`
		D  json.RawMessage `json:"d"`
	}
	if err := json.Unmarshal(payload, &cmd); err != nil || cmd.Op == nil {
		httpapi.WriteError(w, http.StatusBadRequest, "payload must be a gateway command {\"op\":N,\"d\":...}")
		return
	}
	// Discord closes the shard (4001, 4002) on a command it does not take: checked here, answered 400.
	if err := discord.CheckCommand(*cmd.Op, cmd.D); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	compact, err := json.Marshal(map[string]any{"op": *cmd.Op, "d": cmd.D})
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "payload d is not valid JSON")
		return
	}
	err = s.SendRaw(r.Context(), compact)
	switch {
	case errors.Is(err, shard.ErrPayloadTooLarge):
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, shard.ErrNotConnected):
		httpapi.WriteError(w, http.StatusServiceUnavailable, err.Error())
	case err != nil:
		httpapi.WriteError(w, http.StatusBadGateway, err.Error())
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// handleDiscordeno serves the messages of Discordeno's big-bot template.
func (c shardCommands) handleDiscordeno(w http.ResponseWriter, r *http.Request) {
	var msg struct {
		Type    string          `json:"type"`
		ShardID *int            `json:"shardId"`
		GuildID json.Number     `json:"guildId"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := httpapi.DecodeBody(w, r, maxCommandBody, &msg); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "body must be a JSON message with a type: "+err.Error())
		return
	}
	m := c.manager(w)
	if m == nil {
		return
	}
	switch msg.Type {
	case "ShardPayload":
		if msg.ShardID == nil {
			httpapi.WriteError(w, http.StatusBadRequest, "ShardPayload needs shardId")
			return
		}
		c.sendCommand(w, r, m, *msg.ShardID, msg.Payload)
	case "EditShardsPresence":
		if err := discord.CheckCommand(discord.OpPresenceUpdate, msg.Payload); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "EditShardsPresence needs payload, a presence: "+err.Error())
			return
		}
		cmd, _ := json.Marshal(map[string]any{"op": discord.OpPresenceUpdate, "d": msg.Payload})
		failed := 0
		for _, s := range m.Shards() {
			if err := s.SendRaw(r.Context(), cmd); err != nil {
				failed++
				c.log.Warn("presence not sent", zap.Int("shard", s.ID()), zap.Error(err))
			}
		}
		if failed > 0 {
			httpapi.WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("presence not sent to %d of %d shards", failed, len(m.Shards())))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case "ShardInfoFromGuild":
		gid, err := strconv.ParseUint(msg.GuildID.String(), 10, 64)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, "ShardInfoFromGuild needs guildId, a snowflake")
			return
		}
		id := m.ShardForGuild(gid)
		s := m.Shard(id)
		if s == nil {
			httpapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("guild %d is on shard %d, which does not run in this process", gid, id))
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"shardId": id, "rtt": s.RTT().Milliseconds()})
	default:
		httpapi.WriteError(w, http.StatusBadRequest, fmt.Sprintf("unknown message type %q (ShardPayload, EditShardsPresence, ShardInfoFromGuild)", msg.Type))
	}
}

func (c shardCommands) handleShardSend(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "shard id must be a number")
		return
	}
	var body json.RawMessage
	if err := httpapi.DecodeBody(w, r, maxCommandBody, &body); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, "body must be JSON: "+err.Error())
		return
	}
	if m := c.manager(w); m != nil {
		c.sendCommand(w, r, m, id, body)
	}
}
