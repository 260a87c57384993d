package loadtool

import (
	"os"
	"testing"

	"github.com/ddhq/dd/internal/natsproc"
)

// TestMain lets the test binary serve as a cluster run's NATS server (natsproc.RunChild), as cmd/ddload
// does.
func TestMain(m *testing.M) {
	if code, ok := natsproc.RunChild(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}
