package httpapi

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ddhq/dd/internal/testkit"
)

// A handler's panic (or an accept error) is logged by net/http through ErrorLog: it must reach dd's log at
// Warn, under a logger at the production level (info).
func TestHTTPServerErrorsAreLoggedAtWarn(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("handler bug") })
	s := NewServer(ServerOptions{Name: "gateway", Listen: "127.0.0.1:0", MaxConnections: 8, API: api,
		Registry: prometheus.NewRegistry(), Logger: zap.New(core)})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	defer s.Close()
	if resp, err := http.Get("http://" + s.Addr() + "/boom"); err == nil {
		resp.Body.Close()
	}
	testkit.Eventually(t, 2*time.Second, "the panic in the log", func() bool {
		return logs.FilterMessageSnippet("handler bug").Len() > 0
	})
	for _, e := range logs.FilterMessageSnippet("handler bug").All() {
		if e.Level < zapcore.WarnLevel {
			t.Errorf("the server's error was logged at %s, want warn or above", e.Level)
		}
	}
}
