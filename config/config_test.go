package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dd.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, body string, env []string, role Role) (*Config, error) {
	t.Helper()
	src := Source{Environ: append([]string{}, env...), Role: role}
	if body != "" {
		src.File, src.FileRequired = writeFile(t, body), true
	}
	return Load(src)
}

func TestExampleConfigDocumentsEveryKeyWithItsDefault(t *testing.T) {
	fk := koanf.New(".")
	if err := fk.Load(file.Provider("../config.example.toml"), toml.Parser()); err != nil {
		t.Fatal(err)
	}
	got := fk.Keys()
	if want := Keys(); !reflect.DeepEqual(got, want) {
		t.Fatalf("config.example.toml keys\n got %v\nwant %v", got, want)
	}
	for _, key := range got {
		if def := keyIndex[key].def; !reflect.DeepEqual(fk.Get(key), def) {
			t.Errorf("%s: example says %#v, default is %#v", key, fk.Get(key), def)
		}
	}
	cfg, err := Load(Source{File: "../config.example.toml", FileRequired: true, Environ: []string{}, Role: RoleCache})
	if err != nil {
		t.Fatalf("example does not load: %v", err)
	}
	if cfg.Gateway.Intents != 1|1<<9 || cfg.Gateway.ReshardCheckInterval != 8*time.Hour || cfg.Gateway.LastShard != -1 {
		t.Fatalf("example decoded wrongly: %+v", cfg.Gateway)
	}
}

func TestDefaultsWithoutFile(t *testing.T) {
	cfg, err := Load(Source{File: filepath.Join(t.TempDir(), "absent.toml"), Environ: []string{"DD_DISCORD__TOKEN=abc-test-token-0123456789"}, Role: RoleAll})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Rest.Listen != "127.0.0.1:8000" || cfg.Events.MaxQueueEvents != 10000000 || cfg.Discord.APIVersion != 10 {
		t.Fatalf("defaults wrong: %+v", cfg)
	}
}

func TestNamedConfigFileMustExist(t *testing.T) {
	_, err := Load(Source{File: filepath.Join(t.TempDir(), "absent.toml"), FileRequired: true, Environ: []string{}, Role: RoleCache})
	if err == nil || !strings.Contains(err.Error(), "absent.toml") {
		t.Fatalf("want an error naming the missing file, got %v", err)
	}
}

func TestEnvironmentBeatsFileAndUnknownEnvIsIgnored(t *testing.T) {
	cfg, err := load(t, "[rest]\nlisten = \"127.0.0.1:7000\"\n[discord]\ntoken = \"file-token-0123456789\"\n", []string{
		"DD_REST__LISTEN=127.0.0.1:7001",
		"DD_GATEWAY__TOTAL_SHARDS=16",
		"DD_GATEWAY__INTENTS=Guilds,GuildMembers",
		"DD_EVENTS__URLS=http://a:1/, http://b:2/",
		"DD_STORE__SYNC_WRITES=true",
		"DD_GATEWAY__RESHARD_CHECK_INTERVAL=30m",
		"DD_ENV=prod", "DD_SERVICE=bot", "DD_AGENT_HOST=10.0.0.1", // Datadog's, not ours
	}, RoleAll)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Rest.Listen != "127.0.0.1:7001" {
		t.Errorf("rest.listen = %q, want the environment's", cfg.Rest.Listen)
	}
	if cfg.Discord.Token != "file-token-0123456789" || cfg.Gateway.TotalShards != 16 || cfg.Gateway.Intents != 3 ||
		!cfg.Store.SyncWrites || cfg.Gateway.ReshardCheckInterval != 30*time.Minute {
		t.Errorf("environment not applied: %+v", cfg)
	}
	if !reflect.DeepEqual(cfg.Events.URLs, []string{"http://a:1/", "http://b:2/"}) {
		t.Errorf("events.urls = %q", cfg.Events.URLs)
	}
}

func TestSecretsFallBackToTopLevel(t *testing.T) {
	cfg, err := load(t, "secret = \"top-secret-0123456789\"\n[discord]\ntoken=\"test-token-0123456789\"\n[cache]\nsecret = \"own-secret-0123456789\"\n", nil, RoleAll)
	if err != nil {
		t.Fatal(err)
	}
	if top := "top-secret-0123456789"; cfg.Rest.Secret != top || cfg.Gateway.Secret != top || cfg.Events.Secret != top || cfg.Cache.Secret != "own-secret-0123456789" {
		t.Fatalf("fallbacks wrong: rest %q gateway %q events %q cache %q", cfg.Rest.Secret, cfg.Gateway.Secret, cfg.Events.Secret, cfg.Cache.Secret)
	}
}

// Each bad config is rejected with a message naming the key.
func TestBadConfigNamesTheKey(t *testing.T) {
	cases := []struct {
		name, body string
		env        []string
		role       Role
		want       []string
	}{
		{"unknown key", "[rest]\nlistn = \"x\"\n", nil, RoleCache, []string{"rest.listn", `did you mean "rest.listen"`}},
		{"unknown section", "[restt]\nlisten = \"x\"\n", nil, RoleCache, []string{"restt.listen"}},
		{"wrong type int", "[gateway]\ntotal_shards = \"many\"\n", nil, RoleCache, []string{"gateway.total_shards", "integer"}},
		{"wrong type string", "[rest]\nlisten = 8000\n", nil, RoleCache, []string{"rest.listen", "string"}},
		{"wrong type bool", "[gateway]\nreshard = \"yes\"\n", nil, RoleCache, []string{"gateway.reshard"}},
		{"bad duration", "[gateway]\nreshard_check_interval = \"8 hours\"\n", nil, RoleCache, []string{"gateway.reshard_check_interval", "duration"}},
		{"duration without unit", "shutdown_timeout = \"15\"\n", nil, RoleCache, []string{"shutdown_timeout"}},
		{"bad listen", "[rest]\nlisten = \"localhost\"\n", nil, RoleCache, []string{"rest.listen", "host:port"}},
		{"bad port", "[cache]\nlisten = \"127.0.0.1:99999\"\n", nil, RoleCache, []string{"cache.listen", "port"}},
		{"missing token", "[log]\nlevel = \"info\"\n", nil, RoleRest, []string{"discord.token", "required"}},
		{"missing token gateway", "", []string{}, RoleGateway, []string{"discord.token"}},
		{"token with prefix", "[discord]\ntoken = \"Bot abc\"\n", nil, RoleCache, []string{"discord.token", "prefix"}},
		{"bad level", "[log]\nlevel = \"loud\"\n", nil, RoleCache, []string{"log.level"}},
		{"bad format", "[log]\nformat = \"xml\"\n", nil, RoleCache, []string{"log.format"}},
		{"bad intent", "[gateway]\nintents = [\"Guilds\", \"GuildMesages\"]\n", nil, RoleCache, []string{"gateway.intents", "GuildMesages"}},
		{"bad intents int", "[gateway]\nintents = 1073741824\n", nil, RoleCache, []string{"gateway.intents"}},
		{"bad compress", "[gateway]\ncompress = \"gzip\"\n", nil, RoleCache, []string{"gateway.compress"}},
		{"shard range", "[gateway]\ntotal_shards = 4\nlast_shard = 4\n", nil, RoleCache, []string{"gateway.last_shard"}},
		{"reversed range", "[gateway]\nfirst_shard = 3\nlast_shard = 1\n", nil, RoleCache, []string{"gateway.last_shard"}},
		{"bad percentage", "[gateway]\nreshard_percentage = 0\n", nil, RoleCache, []string{"gateway.reshard_percentage"}},
		{"bad api url", "[discord]\napi_url = \"discord.com/api\"\n", nil, RoleCache, []string{"discord.api_url"}},
		{"bad api version", "[discord]\napi_version = 42\n", nil, RoleCache, []string{"discord.api_version"}},
		{"bad events url", "[events]\nurls = [\"ftp://x/\"]\n", nil, RoleCache, []string{"events.urls"}},
		{"bad queue bound", "[events]\nmax_queue_events = 0\n", nil, RoleCache, []string{"events.max_queue_events"}},
		{"public listen without secret", "[cache]\nlisten = \"0.0.0.0:8002\"\n", nil, RoleCache, []string{"cache.secret"}},
		{"bad env int", "", []string{"DD_GATEWAY__TOTAL_SHARDS=lots"}, RoleCache, []string{"DD_GATEWAY__TOTAL_SHARDS", "integer"}},
		{"bad env duration", "", []string{"DD_SHUTDOWN_TIMEOUT=5"}, RoleCache, []string{"DD_SHUTDOWN_TIMEOUT"}},
		{"toml syntax", "[rest\nlisten=1", nil, RoleCache, []string{"dd.toml"}},
		{"bad cache field", "[cache]\nmember_fields = [\"Nick\"]\n", nil, RoleCache, []string{"cache.member_fields", "Nick"}},
		{"bad cache batch", "[cache]\nbatch_max = 0\n", nil, RoleCache, []string{"cache.batch_max"}},
		{"bad cache messages", "[cache]\nmessages_per_channel = -1\n", nil, RoleCache, []string{"cache.messages_per_channel"}},
		{"bad env fields", "", []string{"DD_CACHE__GUILD_FIELDS=name,Icon"}, RoleCache, []string{"cache.guild_fields", "Icon"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := load(t, c.body, c.env, c.role)
			if err == nil {
				t.Fatalf("accepted; want an error mentioning %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestAllProblemsReportedAtOnce(t *testing.T) {
	_, err := load(t, "[rest]\nlistn = 1\n[gateway]\ncompres = \"x\"\n", nil, RoleCache)
	if err == nil || !strings.Contains(err.Error(), "rest.listn") || !strings.Contains(err.Error(), "gateway.compres") {
		t.Fatalf("want both unknown keys reported, got %v", err)
	}
}

func TestEffectiveConfigMasksSecrets(t *testing.T) {
	cfg, err := load(t, "secret = \"s3cr3t-top-0123456789\"\n[discord]\ntoken = \"tok-ABCDEF.123-0123456789\"\n[events]\nsecret = \"ev-secret-0123456789\"\n", nil, RoleAll)
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Effective()
	for _, s := range []string{"s3cr3t-top-0123456789", "tok-ABCDEF.123-0123456789", "ev-secret-0123456789"} {
		if strings.Contains(out, s) {
			t.Errorf("effective config shows secret %q:\n%s", s, out)
		}
	}
	if !strings.Contains(out, "********") || !strings.Contains(out, "listen = '127.0.0.1:8000'") && !strings.Contains(out, `listen = "127.0.0.1:8000"`) {
		t.Errorf("effective config lacks masked secrets or values:\n%s", out)
	}
	if got := cfg.Secrets(); len(got) != 3 {
		t.Errorf("Secrets() = %d values, want 3 distinct", len(got))
	}
}

func TestBadIntentFromEnvironmentNamesTheVariable(t *testing.T) {
	_, err := load(t, "", []string{"DD_GATEWAY__INTENTS=Guilds,Nope"}, RoleCache)
	if err == nil || !strings.Contains(err.Error(), "DD_GATEWAY__INTENTS") || !strings.Contains(err.Error(), `"Nope"`) {
		t.Fatalf("want an error naming DD_GATEWAY__INTENTS and the bad intent, got %v", err)
	}
}

// wantErrorsNaming loads each config file body of cases for role and wants an error naming its key.
func wantErrorsNaming(t *testing.T, role Role, cases map[string]string) {
	t.Helper()
	for body, key := range cases {
		if _, err := load(t, body, nil, role); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: want an error naming %s, got %v", body, key, err)
		}
	}
}

func TestGatewayEventOptionsAreChecked(t *testing.T) {
	wantErrorsNaming(t, RoleCache, map[string]string{
		"[gateway]\nlarge_threshold = 10\n":             "gateway.large_threshold",
		"[gateway]\nloading_guild_event = \"loaded\"\n": "gateway.loading_guild_event",
		"[events]\nbatch_max = 0\n":                     "events.batch_max",
		"[events]\ndrop = [\"READY\"]\n":                "events.drop",
		"[events]\ndrop = [\"typing_start\"]\n":         "events.drop",
	})
}

func TestCacheFieldsFromTheEnvironment(t *testing.T) {
	cfg, err := load(t, "", []string{"DD_CACHE__MEMBER_FIELDS=roles, nick", "DD_CACHE__PRESENCES=true"}, RoleCache)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Cache.MemberFields, []string{"roles", "nick"}) || !cfg.Cache.Presences || cfg.Cache.BatchMax != 100 {
		t.Fatalf("cache config from the environment: %+v", cfg.Cache)
	}
}

func TestClusterSplitIsChecked(t *testing.T) {
	wantErrorsNaming(t, RoleCache, map[string]string{
		"[gateway]\nclusters = 0\n":                  "gateway.clusters",
		"[gateway]\nclusters = 2\ncluster_id = 2\n":  "gateway.cluster_id",
		"[gateway]\nclusters = 2\nfirst_shard = 4\n": "gateway.clusters",
		"[gateway]\nclusters = 2\ncluster_id = -1\n": "gateway.cluster_id",
	})
}

func TestSplitTotalMustDivideAmongClusters(t *testing.T) {
	_, err := load(t, "[gateway]\ntotal_shards = 5\nclusters = 2\n", nil, RoleCache)
	if err == nil || !strings.Contains(err.Error(), "gateway.total_shards") {
		t.Fatalf("want an error naming gateway.total_shards, got %v", err)
	}
}

func TestStoreMemoryLimitIsBounded(t *testing.T) {
	for _, v := range []string{"1048576", "33554432", "67108863", "0", "-1", "68719476737"} {
		_, err := load(t, "", []string{"DD_STORE__MEMORY_LIMIT=" + v}, RoleCache)
		if err == nil || !strings.Contains(err.Error(), "store.memory_limit") || !strings.Contains(err.Error(), "64 MiB") ||
			!strings.Contains(err.Error(), v) {
			t.Errorf("store.memory_limit = %s: want an error naming the key, its bounds and the value, got %v", v, err)
		}
	}
	cfg, err := load(t, "[store]\nmemory_limit = 67108864\n", nil, RoleCache)
	if err != nil || cfg.Store.MemoryLimit != 64<<20 {
		t.Fatalf("memory_limit = 67108864: %v, %+v", err, cfg)
	}
	if cfg, err := load(t, "", nil, RoleCache); err != nil || cfg.Store.MemoryLimit != 160<<20 {
		t.Fatalf("store.memory_limit's default: %v, %d, want 160 MiB", err, cfg.Store.MemoryLimit)
	}
}
