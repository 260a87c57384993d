package gateway

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"go.uber.org/zap"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/shard"
	"github.com/ddhq/dd/store"
)

// MaxShards bounds every shard count dd accepts: from the config, from Discord's recommendation, from a
// reshard request, from a coordinator's target. Discord documents no maximum; the largest bots run some
// tens of millions of guilds, at Discord's recommended ~1,000 guilds a shard some tens of thousands of
// shards, so 65,536 (26 million guilds at the 2,500-a-shard minimum, 65 million at 1,000) leaves room
// while keeping a shard id list from a request to 512 KiB.
const MaxShards = 65536

// CheckCount says why total is not a shard count dd may run: outside 1..MaxShards, or, when
// maxConcurrency is above 1 (Discord's large-bot sharding), not a multiple of it. maxConcurrency 0 means
// unknown and skips that check. It allocates nothing, so it can vet a number from a request.
func CheckCount(total, maxConcurrency int) error {
	if total < 1 || total > MaxShards {
		return fmt.Errorf("total_shards must be at least 1 and at most %d, got %d", MaxShards, total)
	}
	if maxConcurrency > 1 && total%maxConcurrency != 0 {
		return fmt.Errorf("total_shards %d is not a multiple of max_concurrency %d (Discord's large-bot sharding requires it)", total, maxConcurrency)
	}
	return nil
}

// NewShardCount is the shard count a reshard moves to: Discord's recommendation, never fewer than the
// guilds need at 2500 a shard, and for large bots a multiple of max_concurrency (or of 16 past 100
// shards when max_concurrency is 1), as Discord's large-bot sharding requires.
func NewShardCount(recommended, guilds, maxConcurrency int) int {
	n := max(recommended, minShards(guilds), 1)
	step := 1
	switch {
	case maxConcurrency > 1:
		step = maxConcurrency
	case n > 100:
		step = 16
	}
	return (n + step - 1) / step * step
}

// minShards is the fewest shards that can hold guilds (Discord's 2500 a shard).
func minShards(guilds int) int {
	return (guilds + discord.MaxGuildsPerShard - 1) / discord.MaxGuildsPerShard
}

// Due reports whether a bot with guilds over total shards has reached percentage of their capacity.
func Due(guilds, total, percentage int) bool {
	return guilds*100 >= total*discord.MaxGuildsPerShard*percentage
}

// MultipleOf rounds want up to a multiple of current: the counts a split deployment can move to (every
// guild then stays in its process, see Config.Processes).
func MultipleOf(want, current int) int {
	return (want + current - 1) / current * current
}

// ---- what the pipeline keeps in the store ----

// totalKey stores the shard count a reshard moved to, with the configured count it replaced.
var totalKey = []byte("gateway/total_shards")

type storedCount struct {
	Total      int `json:"total"`
	FromConfig int `json:"from_config"` // Config.TotalShards when the reshard happened
}

// storedTotal returns the count of the last reshard, when Config.TotalShards has not changed since.
func (g *Gateway) storedTotal() (int, bool) {
	v, err := g.cfg.Store.Get(totalKey)
	if err != nil {
		return 0, false
	}
	var st storedCount
	if json.Unmarshal(v, &st) != nil {
		return 0, false
	}
	if err := CheckCount(st.Total, 0); err != nil {
		g.log.Error("ignoring the stored shard count of the last reshard", zap.Error(err))
		return 0, false
	}
	if st.FromConfig != g.cfg.TotalShards {
		g.log.Info("gateway.total_shards changed since the last reshard; using the configured count",
			zap.Int("resharded_to", st.Total), zap.Int("configured", g.cfg.TotalShards))
		return 0, false
	}
	return st.Total, true
}

// persistReshard stores the new count and drops the old set's sessions (ended at Discord) and guilds.
func (g *Gateway) persistReshard(old, next *Set) error {
	v, _ := json.Marshal(storedCount{Total: next.total, FromConfig: g.cfg.TotalShards})
	return g.cfg.Store.Update(func(w store.Writer) error {
		if err := w.Set(totalKey, v); err != nil {
			return err
		}
		for _, id := range old.ids {
			if err := w.Delete(shard.SessionKey(id, old.total)); err != nil {
				return err
			}
			if err := w.Delete(guildsKey(old.total, id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// guildsKey is where a shard's guild ids are stored, beside its session (shard.SessionKey). A restarted
// shard that resumes gets no READY or GUILD_CREATE burst: its guilds come from here.
func guildsKey(total, id int) []byte { return fmt.Appendf(nil, "gateway/guilds/%d/%d", total, id) }

func encodeGuilds(ids []uint64) []byte {
	out := make([]byte, 0, 8*len(ids))
	for _, id := range ids {
		out = binary.BigEndian.AppendUint64(out, id)
	}
	return out
}

func decodeGuilds(v []byte) []uint64 {
	ids := make([]uint64, 0, len(v)/8)
	for i := 0; i+8 <= len(v); i += 8 {
		ids = append(ids, binary.BigEndian.Uint64(v[i:]))
	}
	return ids
}

// ShardRange is a Config.Shards that runs first..last of every count (last below 0 or past the count:
// to its end).
func ShardRange(first, last int) func(total int) []int {
	return func(total int) []int {
		end := last
		if end < 0 || end >= total {
			end = total - 1
		}
		var ids []int
		for id := max(first, 0); id <= end; id++ {
			ids = append(ids, id)
		}
		return ids
	}
}

// ShardSplit is a Config.Shards for one of processes processes that share the shards: those whose id
// modulo processes is process, so that a reshard to a multiple of the count keeps every guild in its
// process.
func ShardSplit(process, processes int) func(total int) []int {
	return func(total int) []int {
		var ids []int
		for id := process; id < total; id += processes {
			ids = append(ids, id)
		}
		return ids
	}
}
