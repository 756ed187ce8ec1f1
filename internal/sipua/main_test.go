package sipua_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if goroutines outlive the tests (every UA and
// fake is closed in t.Cleanup).
func TestMain(m *testing.M) {
	base := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > base {
			buf := make([]byte, 1<<20)
			s := string(buf[:runtime.Stack(buf, true)])
			if strings.Contains(s, "sipua.") || strings.Contains(s, "siptest.") {
				fmt.Fprintf(os.Stderr, "goroutine leak: %d > %d\n%s", n, base, s)
				code = 1
			}
		}
	}
	os.Exit(code)
}
