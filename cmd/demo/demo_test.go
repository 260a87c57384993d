package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/ddhq/dd/internal/testkit"
)

// The README's first command runs this demo: it must show events flowing through a real dd, REST calls
// answered, and no 429.
func TestDemoShowsEventsFlowing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs dd")
	}
	dir := t.TempDir()
	dd := filepath.Join(dir, "dd")
	if err := testkit.BuildDD(dd); err != nil {
		t.Fatal(err)
	}
	demo := filepath.Join(dir, "demo")
	if out, err := exec.Command("go", "build", "-o", demo, ".").CombinedOutput(); err != nil {
		t.Fatalf("building demo: %v\n%s", err, out)
	}
	out, err := exec.Command(demo, "-dd", dd, "-dir", filepath.Join(dir, "demo-data"), "-for", "7s", "-rate", "40").CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`bot received (\d+) events; Discord saw (\d+) identifies, \d+ resumes, (\d+) identify violations, (\d+) REST requests, (\d+) REST 429s`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no summary in the demo's output:\n%s", out)
	}
	n := func(i int) int { v, _ := strconv.Atoi(string(m[i])); return v }
	if n(1) < 50 || n(2) != 2 || n(3) != 0 || n(4) < 2 || n(5) != 0 {
		t.Fatalf("demo summary %q: want events flowing, 2 identifies, no violation, REST calls and no 429\n%s", m[0], out)
	}
	if !regexp.MustCompile(`REST through dd: POST /channels/\d+/messages -> 200`).Match(out) {
		t.Fatalf("no successful REST call through dd in the demo:\n%s", out)
	}
	// dd's log file is plain text: no terminal colour codes in a file.
	ddLog, err := os.ReadFile(filepath.Join(dir, "demo-data", "dd.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(ddLog, []byte("INFO")) || bytes.Contains(ddLog, []byte("\x1b[")) {
		t.Fatalf("dd.log: want plain INFO lines without escape codes, got:\n%q", ddLog)
	}
}
