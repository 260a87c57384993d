package config

import (
	"strings"
	"testing"
)

func TestRedisSinkKeys(t *testing.T) {
	const base = "[discord]\ntoken = \"test-token-0123456789\"\n"
	cfg, err := load(t, base, nil, RoleGateway)
	if err != nil {
		t.Fatal(err)
	}
	if e := cfg.Events; e.Sink != "http" || e.RedisURL != "" || e.RedisPrefix != "" {
		t.Fatalf("events defaults wrong: %+v", e)
	}
	cfg, err = load(t, base+"[events]\nsink = \"redis\"\nredis_prefix = \"bot:\"\n",
		[]string{"DD_EVENTS__REDIS_URL=rediss://default:redis-pass-0123@redis.example:6380/3"}, RoleGateway)
	if err != nil {
		t.Fatal(err)
	}
	if e := cfg.Events; e.Sink != "redis" || e.RedisURL != "rediss://default:redis-pass-0123@redis.example:6380/3" || e.RedisPrefix != "bot:" {
		t.Fatalf("events values wrong: %+v", e)
	}
	if out := cfg.Effective(); strings.Contains(out, "redis-pass-0123") || !strings.Contains(out, "rediss://default:xxxxx@redis.example:6380/3") {
		t.Fatalf("--check-config shows the Redis password, or not the URL masked:\n%s", out)
	}
	found := false
	for _, s := range cfg.Secrets() {
		found = found || s == "redis-pass-0123"
	}
	if !found {
		t.Fatalf("the Redis password is not among the values the logger redacts: %v", cfg.Secrets())
	}
}

func TestBadRedisSinkConfigNamesTheKeyNotThePassword(t *testing.T) {
	cases := map[string]string{
		"events.sink":      "sink = \"kafka\"",
		"events.redis_url": "sink = \"redis\"",
	}
	for _, u := range []string{"http://:redis-pass-0123@host:6379", "redis://:redis-pass-0123@:6379", "redis://:redis-pass-0123@host/zero",
		"redis://:redis-pass%zz0123@host"} {
		cases["events.redis_url "+u] = "sink = \"redis\"\nredis_url = \"" + u + "\""
	}
	for name, lines := range cases {
		key, _, _ := strings.Cut(name, " ")
		_, err := load(t, "[events]\n"+lines+"\n", nil, RoleGateway)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: want an error naming %s, got %v", lines, key, err)
			continue
		}
		if strings.Contains(err.Error(), "redis-pass") {
			t.Errorf("%s: the error shows the password: %v", lines, err)
		}
	}
}
