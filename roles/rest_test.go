package roles

import (
	"io"
	"net"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/ddhq/dd/config"
	"github.com/ddhq/dd/sim/discordsim"
)

// startRestRole runs the rest role in-process against a simulator, configured the real way
// (environment), and returns its address; the test fails if the role does not stop cleanly.
func startRestRole(t *testing.T, sim *discordsim.Server, env ...string) string {
	t.Helper()
	env = append([]string{"DD_DISCORD__TOKEN=" + sim.Config().Tokens[0], "DD_DISCORD__API_URL=" + sim.APIURL(),
		"DD_REST__SECRET=rest-role-secret-0123456789", "DD_SHUTDOWN_TIMEOUT=5s"}, env...)
	dd := startDDWith(t, config.RoleRest, Options{Logger: zap.NewNop()}, env...)
	t.Cleanup(func() {
		if err := dd.stop(t); err != nil {
			t.Errorf("rest role: %v", err)
		}
	})
	return dd.addrs[config.RoleRest]
}

func TestRestRoleServesDiscordsAPIWithItsMetrics(t *testing.T) {
	sim := startSim(t, discordsim.Config{Tokens: []string{"tok-rest-0123456789"}})
	addr := startRestRole(t, sim, "DD_REST__MAX_WAIT=5s")
	ch := discordsim.FormatID(sim.Guilds()[0].Channels[0])

	get := func(path, auth string) (int, string) { return call(t, "GET", "http://"+addr+path, auth, "") }
	if code, body := get("/api/v10/channels/"+ch, "rest-role-secret-0123456789"); code != 200 || !strings.Contains(body, ch) {
		t.Fatalf("GET channel through the rest role: %d %s", code, body)
	}
	if code, _ := get("/api/v10/channels/"+ch, ""); code != 401 {
		t.Fatalf("without a secret: %d, want 401", code)
	}
	// The role's API sees the path as sent: a traversal is refused, not cleaned and redirected.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /api/v10/channels/"+ch+"/../../users/@me HTTP/1.1\r\nHost: x\r\nAuthorization: rest-role-secret-0123456789\r\n\r\n")
	line := make([]byte, 12)
	if _, err := io.ReadFull(c, line); err != nil || string(line) != "HTTP/1.1 400" {
		t.Fatalf("traversal: status line %q (%v), want 400", line, err)
	}
	code, metrics := get("/metrics", "")
	for _, m := range []string{"dd_rest_requests_total", "dd_rest_queue_wait_seconds", "dd_rest_queue_depth", "dd_rest_invalid_requests",
		"dd_rest_unauthorized_total 1", "dd_rest_refused_total"} {
		if code != 200 || !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if code, _ := get("/healthz", ""); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if n := sim.RESTStats().Requests; n != 1 {
		t.Fatalf("simulator saw %d requests, want 1", n)
	}
}
