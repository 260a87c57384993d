package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary runs as the simulator when this variable holds its arguments (one per line).
const childArgsEnv = "DISCORDSIM_TEST_ARGS"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(childArgsEnv); ok {
		os.Exit(run(strings.Split(args, "\n")))
	}
	os.Exit(m.Run())
}

// -cpuprofile: the simulator, ended by SIGTERM as ddload ends it, writes a CPU profile (gzipped
// protobuf) that holds samples of its firehose.
func TestCPUProfileWrittenOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	prof, urlFile := filepath.Join(dir, "sim.cpu"), filepath.Join(dir, "url")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childArgsEnv+"="+strings.Join([]string{"-cpuprofile", prof, "-url-file", urlFile,
		"-firehose-rate", "100000"}, "\n"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(urlFile); err == nil && strings.HasPrefix(string(b), "http://") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no URL file after 20s; output:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(prof); err != nil {
		t.Fatalf("the profile file is not created at the start: %v", err)
	}
	time.Sleep(time.Second) // some firehose to sample (no session: the events are only made)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the simulator exited with %v after SIGTERM; output:\n%s", err, out.String())
	}
	f, err := os.Open(prof)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("the profile is not gzipped (not written, or cut short): %v", err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("the profile is cut short: %v", err)
	}
	// The protobuf holds the function names of its samples as strings (the binary's name, which holds
	// "discordsim" too, is not followed by a dot and a function).
	if !bytes.Contains(body, []byte("github.com/ddhq/dd/sim/discordsim.")) {
		t.Errorf("the profile (%d bytes unzipped) names no discordsim function", len(body))
	}
}
