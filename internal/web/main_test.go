package web

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if goroutines started by the tests outlive them
// (servers, streams, the browser's connections).
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leftGoroutines returns the stacks of goroutines that are neither the
// test runner's nor the runtime's own (signal handling, fuzzing).
func leftGoroutines() []string {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	var out []string
	for _, g := range strings.Split(stacks, "\n\n") {
		switch {
		case strings.Contains(g, "testing.(*M)."), strings.Contains(g, "leftGoroutines"),
			strings.Contains(g, "os/signal."), strings.Contains(g, "testing.(*F)."),
			strings.Contains(g, "internal/fuzz."):
			continue
		}
		out = append(out, g)
	}
	return out
}

// waitGoroutines polls until no test goroutine is left, returning their
// stacks if some are still there after limit.
func waitGoroutines(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		left := leftGoroutines()
		if len(left) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
