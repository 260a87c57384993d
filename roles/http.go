package roles

import (
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/internal/httpapi"
)

// requireSecret lets a request through only with Authorization equal to secret. An empty secret (allowed
// on loopback only, see config) lets everything through.
func requireSecret(secret string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if secret != "" && !httpapi.SecretMatches(r.Header.Get("Authorization"), secret) {
			httpapi.Unauthorized(w, r) // without reading the body: a stranger sending one slowly holds nothing
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withProfiles serves Go's runtime profiles under /debug/pprof/ (behind the role's secret, like the rest
// of its API) and everything else with next: a heap or CPU profile of the real process is how a big
// gateway's memory and CPU per shard are found; /debug/pprof/heap?gc=1 collects first.
func withProfiles(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.Handle("/", next)
	return mux
}

// gatewayBotAPI is where a gateway asks for /gateway/bot, and with what Authorization: through the rest
// role when rest.url is set (it holds the token), else Discord with the bot token.
func gatewayBotAPI(cfg *config.Config) (apiURL, auth string) {
	if cfg.Rest.URL != "" {
		return strings.TrimRight(cfg.Rest.URL, "/") + "/api", cfg.Rest.Secret
	}
	return cfg.Discord.APIURL, "Bot " + cfg.Discord.Token
}
