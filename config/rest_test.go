package config

import (
	"strings"
	"testing"
	"time"
)

func TestRestKeysDecodeWithTheirDefaults(t *testing.T) {
	cfg, err := load(t, "[discord]\ntoken = \"test-token-0123456789\"\n", nil, RoleRest)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Rest
	if r.SecretHeader != "" || r.AllowAnyToken || r.MaxBody != 100<<20 || r.MaxWait != time.Minute ||
		r.GlobalRateLimit != 50 || r.InvalidRequestLimit != 9500 || r.MaxRetries != 3 ||
		r.UpstreamTimeout != time.Minute || r.SpoolDir != "" {
		t.Fatalf("rest defaults wrong: %+v", r)
	}
	cfg, err = load(t, "[discord]\ntoken = \"test-token-0123456789\"\n[rest]\nsecret_header = \"X-DD-Secret\"\nallow_any_token = true\nmax_wait = \"2s\"\n",
		[]string{"DD_REST__GLOBAL_RATE_LIMIT=500"}, RoleRest)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Rest.SecretHeader != "X-DD-Secret" || !cfg.Rest.AllowAnyToken || cfg.Rest.MaxWait != 2*time.Second || cfg.Rest.GlobalRateLimit != 500 {
		t.Fatalf("rest values wrong: %+v", cfg.Rest)
	}
}

func TestBadRestConfigNamesTheKey(t *testing.T) {
	cases := map[string]string{
		"rest.secret_header":         "secret_header = \"X DD\"",
		"rest.max_body":              "max_body = 10",
		"rest.max_wait":              "max_wait = \"0s\"",
		"rest.global_rate_limit":     "global_rate_limit = 0",
		"rest.invalid_request_limit": "invalid_request_limit = 20000",
		"rest.max_retries":           "max_retries = -1",
		"rest.upstream_timeout":      "upstream_timeout = \"-1s\"",
	}
	for key, line := range cases {
		_, err := load(t, "[rest]\n"+line+"\n", nil, RoleCache)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: want an error naming %s, got %v", line, key, err)
		}
	}
	if _, err := load(t, "[rest]\nsecret_header = \"authorization\"\n", nil, RoleCache); err == nil ||
		!strings.Contains(err.Error(), "rest.secret_header") {
		t.Errorf("secret_header = authorization accepted: %v", err)
	}
}
