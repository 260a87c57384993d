package config

import (
	"slices"
	"strings"
	"testing"
)

// A secret key holding a value of the wrong type is named in the error, its value never shown.
func TestWrongTypeSecretIsNotEchoed(t *testing.T) {
	for body, key := range map[string]string{
		"[discord]\ntoken = 987654321987654321\n":   "discord.token",
		"secret = [\"987654321987654321\"]\n":       "secret",
		"[events]\nsecret = 987654321987654321\n":   "events.secret",
		"[rest]\nsecret = 987654321.987654321\n":    "rest.secret",
		"[cache]\nsecret = { v = \"987654321\" }\n": "cache.secret",
	} {
		_, err := load(t, body, nil, RoleCache)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: want an error naming %s, got %v", body, key, err)
			continue
		}
		if strings.Contains(err.Error(), "987654321") {
			t.Errorf("%q: the error shows the secret's value: %v", body, err)
		}
	}
	// A key that holds no secret still says what it got.
	if _, err := load(t, "[rest]\nlisten = 8000\n", nil, RoleCache); err == nil || !strings.Contains(err.Error(), "8000") {
		t.Errorf("rest.listen = 8000: want the value in the error, got %v", err)
	}
}

// Every secret key refuses a value under MinSecretLength, from the file or the environment, naming the
// key and not the value.
func TestShortSecretsAreRefused(t *testing.T) {
	const short = "s"
	const long = "a-secret-of-16ch"
	for _, s := range keys {
		if !s.secret {
			continue
		}
		section, leaf, nested := strings.Cut(s.path, ".")
		file := func(v string) string { return s.path + " = \"" + v + "\"\n" }
		env := "DD_" + strings.ToUpper(s.path) + "=" + short
		if nested {
			file = func(v string) string { return "[" + section + "]\n" + leaf + " = \"" + v + "\"\n" }
			env = "DD_" + strings.ToUpper(section) + "__" + strings.ToUpper(leaf) + "=" + short
		}
		for _, c := range []struct {
			body string
			env  []string
		}{{file(short), nil}, {"", []string{env}}} {
			_, err := load(t, c.body, c.env, RoleCache)
			if err == nil || !strings.Contains(err.Error(), "config: "+s.path+": too short") {
				t.Errorf("%s = %q (file %q, env %q): want an error naming the key, got %v", s.path, short, c.body, c.env, err)
			}
		}
		if _, err := load(t, file(long), nil, RoleCache); err != nil {
			t.Errorf("%s with %d characters refused: %v", s.path, len(long), err)
		}
	}
	// The secret itself is not in the message, whatever it is.
	_, err := load(t, "secret = \"hunter2\"\n", nil, RoleCache)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("want an error without the secret, got %v", err)
	}
}

// --check-config's output hides the password of every URL; the logger is told every such password.
func TestEffectiveConfigMasksURLPasswords(t *testing.T) {
	cfg, err := load(t, `[discord]
api_url = "https://bot:api-pass-1@discord.internal/api"
[rest]
url = "http://bot:rest-pass-2@10.0.0.5:8000"
[events]
urls = ["http://bot:events%2Fpass-3@127.0.0.1:9000/", "http://127.0.0.1:9001/", "http://nopass@127.0.0.1:9002/"]
`, nil, RoleCache)
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Effective()
	for _, pw := range []string{"api-pass-1", "rest-pass-2", "events%2Fpass-3", "events/pass-3"} {
		if strings.Contains(out, pw) {
			t.Errorf("effective config shows the password %q:\n%s", pw, out)
		}
	}
	for _, want := range []string{"https://bot:xxxxx@discord.internal/api", "http://bot:xxxxx@10.0.0.5:8000",
		"http://bot:xxxxx@127.0.0.1:9000/", "http://127.0.0.1:9001/", "http://nopass@127.0.0.1:9002/"} {
		if !strings.Contains(out, want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}
	secrets := cfg.Secrets()
	for _, pw := range []string{"api-pass-1", "rest-pass-2", "events%2Fpass-3", "events/pass-3"} {
		if !slices.Contains(secrets, pw) {
			t.Errorf("Secrets() = %q lacks the URL password %q", secrets, pw)
		}
	}
}

// An invalid URL's error names the key, not the URL's password.
func TestBadURLErrorHidesItsPassword(t *testing.T) {
	for _, body := range []string{
		"[events]\nurls = [\"ftp://bot:hunter2-pw@x/\"]\n",
		"[discord]\napi_url = \"http://bot:hunter2-pw@x:port/\"\n",
		"[cache]\nurl = \"http://bot:hunter2-pw@/\"\n",
	} {
		_, err := load(t, body, nil, RoleCache)
		if err == nil {
			t.Errorf("%q accepted", body)
			continue
		}
		if strings.Contains(err.Error(), "hunter2-pw") || !strings.Contains(err.Error(), "bot:xxxxx@") {
			t.Errorf("%q: want the URL with its password masked, got %v", body, err)
		}
	}
}

// cluster.nats_url is a list of URLs; the password (or token) of each is a secret.
func TestNATSURLPasswordsAreMasked(t *testing.T) {
	cfg, err := load(t, `[discord]
token = "a-bot-token-of-some-length"
[cluster]
nats_url = "nats://dd:nats-pass-1@10.0.0.1:4222,nats://dd:nats-pass-1@10.0.0.2:4222,tls://nats-token-2@10.0.0.3:4222"
advertise_url = "http://10.0.0.5:8000"
`, nil, RoleRest)
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Effective()
	for _, pw := range []string{"nats-pass-1", "nats-token-2"} {
		if strings.Contains(out, pw) {
			t.Errorf("effective config shows %q:\n%s", pw, out)
		}
		if !slices.Contains(cfg.Secrets(), pw) {
			t.Errorf("Secrets() = %q lacks %q (the logger would not redact it)", cfg.Secrets(), pw)
		}
	}
	if want := "nats://dd:xxxxx@10.0.0.1:4222,nats://dd:xxxxx@10.0.0.2:4222,tls://xxxxx@10.0.0.3:4222"; !strings.Contains(out, want) {
		t.Errorf("effective config lacks %q:\n%s", want, out)
	}
}

func TestClusterKeysAreChecked(t *testing.T) {
	for body, want := range map[string]string{
		"[cluster]\nnats_url = \"nats://127.0.0.1:4222\"\n":                                                   "cluster.advertise_url: must be set",
		"[cluster]\nnats_url = \"http://127.0.0.1:4222\"\nadvertise_url = \"http://127.0.0.1:8000\"\n":        "cluster.nats_url",
		"[cluster]\nnats_url = \"nats://h:4222\"\nadvertise_url = \"http://h:8000\"\nreplicas = 2\n":          "cluster.replicas",
		"[cluster]\nnats_url = \"nats://h:4222\"\nadvertise_url = \"http://h:8000\"\nlease_ttl = \"500ms\"\n": "cluster.lease_ttl",
		"[cluster]\nnats_url = \"nats://h:4222\"\nadvertise_url = \"http://h:8000\"\nname = \"a.b\"\n":        "cluster.name",
		"[cluster]\nnats_url = \"nats://h:4222\"\nadvertise_url = \"10.0.0.5:8000\"\n":                        "cluster.advertise_url",
		"[cluster]\nnats_url = \"nats://u:secret-pw-123@h:4222,nope\"\nadvertise_url = \"http://h:8000\"\n":   "cluster.nats_url",
	} {
		_, err := load(t, body, nil, RoleRest)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: want an error with %q, got %v", body, want, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret-pw-123") {
			t.Errorf("%q: the error shows the password: %v", body, err)
		}
	}
	// Off by default; a gateway process needs no advertise_url for now.
	if _, err := load(t, "[cluster]\nnats_url = \"nats://h:4222\"\n", nil, RoleCache); err != nil {
		t.Errorf("cache role in cluster mode without advertise_url: %v", err)
	}
}
