package sipua_test

import (
	"os"
	"testing"

	"github.com/sipis/sipis/internal/testutil"
)

// TestMain fails the run if goroutines of the UA or the fakes outlive the tests (every UA and
// fake is closed in t.Cleanup).
func TestMain(m *testing.M) {
	os.Exit(testutil.CheckLeaks(m, testutil.Matching("sipua.", "siptest.")))
}
