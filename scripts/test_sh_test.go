// Package scripts holds the project's shell scripts; this test checks scripts/test.sh, what `make test`
// and CI run.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// stub writes an executable that records its name and arguments in the log, runs extra, and succeeds.
func stub(t *testing.T, dir, name, log, extra string) {
	t.Helper()
	script := "#!/bin/sh\necho \"" + name + " $*\" >> " + log + "\n" + extra + "\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// A failing step does not stop the others: with `go test` failing, the Node client tests still run, the
// summary names the failed step, and the exit status is non-zero.
func TestEveryStepRunsAndFailuresAreSummed(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"scripts", "tests/node", "bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	body, err := os.ReadFile("test.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "scripts", "test.sh"), body, 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(root, "calls.log")
	bin := filepath.Join(root, "bin")
	stub(t, bin, "gofmt", log, "")
	stub(t, bin, "npm", log, "")
	stub(t, bin, "node", log, "")
	stub(t, bin, "go", log, `[ "$1" = test ] && exit 1`) // vet passes, test fails

	cmd := exec.Command("bash", filepath.Join(root, "scripts", "test.sh"))
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	code := cmd.ProcessState.ExitCode()
	if err == nil || code == 0 {
		t.Errorf("exit status %d with a failing go test, want non-zero\n%s", code, out)
	}
	calls, _ := os.ReadFile(log)
	if !strings.Contains(string(calls), "node --test") {
		t.Errorf("the Node client tests did not run after go test failed; calls:\n%s\noutput:\n%s", calls, out)
	}
	for _, want := range []string{"FAILED: go test -race", "1 step(s) failed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "FAILED: go vet") || strings.Contains(string(out), "FAILED: node") {
		t.Errorf("a passing step is reported failed:\n%s", out)
	}

	// Everything passing: exit 0 and says so.
	stub(t, bin, "go", log, "")
	cmd = exec.Command("bash", filepath.Join(root, "scripts", "test.sh"))
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "every step passed") {
		t.Errorf("all steps passing: %v\n%s", err, out)
	}
}
