package main

import (
	"testing"

	"github.com/ddhq/dd/config"
)

// A role that opens the store gets four fifths of store.memory_limit as Go's soft memory limit; GOMEMLIMIT in the
// environment wins, and the rest role, which opens no store, keeps the runtime's default.
func TestSoftMemoryLimitComesFromStoreMemoryLimit(t *testing.T) {
	cfg := &config.Config{Store: config.Store{MemoryLimit: 160 << 20}}
	none := func(string) string { return "" }
	set := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "300MiB"
		}
		return ""
	}
	for _, c := range []struct {
		role   config.Role
		getenv func(string) string
		want   int64
	}{
		{config.RoleAll, none, 128 << 20},
		{config.RoleGateway, none, 128 << 20},
		{config.RoleCache, none, 128 << 20},
		{config.RoleRest, none, 0},
		{config.RoleAll, set, 0},
	} {
		if got := memoryLimit(c.role, cfg, c.getenv); got != c.want {
			t.Errorf("--role=%s (GOMEMLIMIT %q): soft limit %d, want %d", c.role, c.getenv("GOMEMLIMIT"), got, c.want)
		}
	}
}
