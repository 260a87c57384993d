package loadtool

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as a cluster run's NATS server (RunChild), as cmd/ddload does.
func TestMain(m *testing.M) {
	if code, ok := RunChild(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}
