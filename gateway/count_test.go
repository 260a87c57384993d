package gateway

import (
	"fmt"
	"strings"
	"testing"
)

func TestNewShardCount(t *testing.T) {
	cases := []struct{ rec, guilds, conc, want int }{
		{1, 100, 1, 1},
		{2, 100, 1, 2},
		{1, 6000, 1, 3},       // guilds need 3 at 2500 each
		{120, 100000, 1, 128}, // past 100 shards: a multiple of 16
		{40, 90000, 16, 48},   // a multiple of max_concurrency
		{16, 10, 16, 16},
	}
	for _, c := range cases {
		if got := NewShardCount(c.rec, c.guilds, c.conc); got != c.want {
			t.Errorf("NewShardCount(%d, %d, %d) = %d, want %d", c.rec, c.guilds, c.conc, got, c.want)
		}
	}
	if !Due(2000, 1, 80) || Due(1999, 1, 80) || !Due(4000, 2, 80) {
		t.Error("Due at 80 % of 2500 per shard is wrong")
	}
}

func TestCheckCountRefusesWhatDiscordOrDDCannotRun(t *testing.T) {
	for _, c := range []struct {
		total, conc int
		says        string
	}{
		{0, 0, "at least 1"}, {-5, 0, "at least 1"}, {MaxShards + 1, 0, "at most 65536"}, {6, 4, "multiple of max_concurrency 4"},
	} {
		if err := CheckCount(c.total, c.conc); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("CheckCount(%d, %d) = %v, want an error saying %q", c.total, c.conc, err, c.says)
		}
	}
	for _, c := range [][2]int{{1, 0}, {MaxShards, 0}, {8, 4}, {3, 1}} {
		if err := CheckCount(c[0], c[1]); err != nil {
			t.Errorf("CheckCount(%d, %d) = %v, want nil", c[0], c[1], err)
		}
	}
}

// The guild lists stored beside the sessions come back as they were stored.
func TestGuildListsRoundTrip(t *testing.T) {
	ids := []uint64{1, 1 << 40, 81384788765712384}
	got := decodeGuilds(encodeGuilds(ids))
	if len(got) != len(ids) {
		t.Fatalf("decoded %v, want %v", got, ids)
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("decoded %v, want %v", got, ids)
		}
	}
}

// A process's shards are chosen anew for every count: the first set's and a reshard's.
func TestShardRangeAndSplitFollowTheCount(t *testing.T) {
	for _, c := range []struct {
		name   string
		shards func(int) []int
		total  int
		want   string
	}{
		{"all", ShardRange(0, -1), 2, "[0 1]"},
		{"all after a reshard", ShardRange(0, -1), 4, "[0 1 2 3]"},
		{"first..last", ShardRange(1, 2), 4, "[1 2]"},
		{"last past the count", ShardRange(1, 9), 3, "[1 2]"},
		{"first past the count", ShardRange(5, -1), 3, "[]"},
		{"split", ShardSplit(1, 2), 4, "[1 3]"},
		{"split after a reshard", ShardSplit(1, 2), 8, "[1 3 5 7]"},
	} {
		if got := fmt.Sprint(c.shards(c.total)); got != c.want {
			t.Errorf("%s of %d: %s, want %s", c.name, c.total, got, c.want)
		}
	}
	r := ShardRange(0, -1)
	r(2)
	if got := fmt.Sprint(r(4)); got != "[0 1 2 3]" {
		t.Errorf("a range used for 2 shards then 4 runs %s of 4", got)
	}
}
