// Package shardstatus is the shape of a gateway's GET /status, shared by one machine's gateway (package
// gateway) and cluster mode's (package cluster): a line a shard and the summary of them.
package shardstatus

import "github.com/ddhq/dd/shard"

// Line is one shard in GET /status.
type Line struct {
	ID        int     `json:"id"`
	State     string  `json:"state"`
	RTTMillis float64 `json:"rtt_ms"`
	Guilds    int     `json:"guilds"`
	Loading   int     `json:"loading_guilds"`
	Resumable bool    `json:"resumable"`
	Queued    int     `json:"queued_events"` // not yet delivered to the bot
}

// Of is s's line, with what the shard does not know: its guilds (loading: not yet available) and its
// events that wait for the bot.
func Of(s *shard.Shard, guilds, loading, queued int) Line {
	return Line{ID: s.ID(), State: s.State().String(), RTTMillis: float64(s.RTT().Microseconds()) / 1000,
		Guilds: guilds, Loading: loading, Resumable: s.Session().Resumable(), Queued: queued}
}

// Summary is /status at a glance: what a person or a probe of a 1,000-shard process reads first.
type Summary struct {
	Shards  int            `json:"shards"`
	States  map[string]int `json:"states"` // shards by state
	Guilds  int            `json:"guilds"`
	Loading int            `json:"loading_guilds"`
	Queued  int            `json:"queued_events"`
	MaxRTT  float64        `json:"max_rtt_ms"`
}

// Add counts l in s.
func (s *Summary) Add(l Line) {
	if s.States == nil {
		s.States = map[string]int{}
	}
	s.Shards++
	s.States[l.State]++
	s.Guilds += l.Guilds
	s.Loading += l.Loading
	s.Queued += l.Queued
	s.MaxRTT = max(s.MaxRTT, l.RTTMillis)
}

// Summarize is the summary of lines; its States is never nil.
func Summarize(lines []Line) Summary {
	s := Summary{States: map[string]int{}}
	for _, l := range lines {
		s.Add(l)
	}
	return s
}
