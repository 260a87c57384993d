// Command demo shows dd working without a Discord token: it starts the Discord simulator and a bot that
// prints the events it receives, runs the real dd binary (--role=all) against them, sends a REST call
// through dd, and prints a summary when stopped (Ctrl-C, or after -for).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ddhq/dd/discord"
	"github.com/ddhq/dd/sim/botsim"
	"github.com/ddhq/dd/sim/discordsim"
)

func main() { os.Exit(run()) }

func run() int {
	ddPath := flag.String("dd", "bin/dd", "the dd binary to run")
	dir := flag.String("dir", "demo-data", "where the demo keeps dd's config, store and log")
	rate := flag.Float64("rate", 3, "events per second the simulated Discord sends")
	guilds := flag.Int("guilds", 25, "guilds of the simulated bot")
	shards := flag.Int("shards", 2, "shards dd runs")
	duration := flag.Duration("for", 0, "stop after this long (0: until Ctrl-C)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}

	// The simulated application has MESSAGE_CONTENT enabled, so the bot sees what the messages say.
	sim := discordsim.New(discordsim.Config{Tokens: []string{"demo-token-0123456789"}, Guilds: *guilds, MaxConcurrency: 16,
		PrivilegedIntents: discord.IntentMessageContent})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		return fail(err)
	}
	defer sim.Close()
	say("simulated Discord on %s (%d guilds; no real token needed)", sim.URL(), *guilds)

	var events atomic.Int64
	bot := botsim.New("demo-bot-secret-0123456789")
	defer bot.Close()
	bot.OnEvent = func(shard int, payload json.RawMessage) {
		n := events.Add(1)
		if n <= 40 || n%100 == 0 {
			say("bot got event #%d from shard %d: %s", n, shard, describe(payload))
		}
	}
	say("bot listening on %s", bot.URL())

	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fail(err)
	}
	restPort, gwPort, cachePort := freePort(), freePort(), freePort()
	cfg := fmt.Sprintf(`secret = "demo-secret-0123456789"
[log]
level = "info"
format = "console"
[discord]
token = "demo-token-0123456789"
api_url = %q
[store]
path = %q
[rest]
listen = "127.0.0.1:%d"
[gateway]
listen = "127.0.0.1:%d"
total_shards = %d
intents = ["Guilds", "GuildMessages", "MessageContent"]
[events]
urls = [%q]
secret = "demo-bot-secret-0123456789"
[cache]
listen = "127.0.0.1:%d"
`, sim.APIURL(), filepath.Join(*dir, "store"), restPort, gwPort, *shards, bot.URL(), cachePort)
	cfgPath := filepath.Join(*dir, "dd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return fail(err)
	}
	logPath := filepath.Join(*dir, "dd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	dd := exec.Command(*ddPath, "--role=all", "--config", cfgPath)
	pr, pw := io.Pipe()
	dd.Stdout, dd.Stderr = pw, pw
	if err := dd.Start(); err != nil {
		return fail(fmt.Errorf("starting %s (run `make build` first): %w", *ddPath, err))
	}
	say("dd started (pid %d) with %s; its log is in %s", dd.Process.Pid, cfgPath, logPath)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			for _, key := range []string{"identified", "ready", "resumed", "listening", "fatal", "ERROR"} {
				if strings.Contains(line, key) {
					say("dd: %s", strings.TrimSpace(line))
					break
				}
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- dd.Wait(); pw.Close() }()

	stopHose := sim.StartFirehose(discordsim.FirehoseOptions{Rate: *rate})
	defer stopHose()
	say("simulated Discord sends %.0f events/s; Ctrl-C stops the demo", *rate)

	restURL := fmt.Sprintf("http://127.0.0.1:%d", restPort)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			say("dd exited unexpectedly: %v (see %s)", err, logPath)
			return 1
		case <-tick.C:
			restCall(restURL, sim)
			continue
		case <-ctx.Done():
		}
		break
	}
	stopHose()
	_ = dd.Process.Signal(syscall.SIGTERM)
	code := 0
	select {
	case err := <-exited:
		if err != nil {
			say("dd stopped with %v", err)
			code = 1
		}
	case <-time.After(20 * time.Second):
		_ = dd.Process.Kill()
		say("dd did not stop within 20s")
		code = 1
	}
	gs, rs := sim.GatewayStats(), sim.RESTStats()
	bs := bot.Stats()
	say("summary: bot received %d events; Discord saw %d identifies, %d resumes, %d identify violations, %d REST requests, %d REST 429s",
		bs.Events, len(gs.Identifies), len(gs.Resumes), gs.IdentifyViolations, rs.Requests, rs.RateLimited())
	if bs.Events == 0 {
		say("no event reached the bot: see %s", logPath)
		code = 1
	}
	return code
}

// restCall sends a message through dd's rest role, as any bot process would.
func restCall(restURL string, sim *discordsim.Server) {
	g := sim.Guilds()[0]
	body := []byte(`{"content":"hello from the demo, through dd"}`)
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/api/v10/channels/%d/messages", restURL, g.Channels[0]), bytes.NewReader(body))
	req.Header.Set("Authorization", "demo-secret-0123456789")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		say("REST through dd: %v", err)
		return
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	say("REST through dd: POST /channels/%d/messages -> %d %.120s", g.Channels[0], resp.StatusCode, out)
}

func describe(payload json.RawMessage) string {
	var p struct {
		T string `json:"t"`
		S int64  `json:"s"`
		D struct {
			Content string `json:"content"`
			Name    string `json:"name"`
		} `json:"d"`
	}
	_ = json.Unmarshal(payload, &p)
	detail := p.D.Content
	if detail == "" {
		detail = p.D.Name
	}
	if len(detail) > 50 {
		detail = detail[:50] + "..."
	}
	return fmt.Sprintf("%-20s seq %-5d %s", p.T, p.S, detail)
}

// freePort finds a port for one of dd's listeners (the demo prints them; a fixed port might be taken).
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func say(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "demo:", err)
	return 1
}
