package web

import (
	"os"
	"testing"

	"github.com/sipis/sipis/internal/testutil"
)

// TestMain fails the run if goroutines started by the tests outlive them (servers, streams,
// the browser's connections); the test runner's and the runtime's own (signal handling,
// fuzzing) do not count.
func TestMain(m *testing.M) {
	os.Exit(testutil.CheckLeaks(m, testutil.Except("testing.(*M).", "os/signal.", "testing.(*F).", "internal/fuzz.")))
}
