package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// crashChildEnv holds the OpenString of the database the child process of TestCrashSafety
// writes to.
const crashChildEnv = "SIPIS_STORE_CRASH_CHILD_DB"

// TestCrashChild is not a test by itself: TestCrashSafety runs the test binary again with only
// this test and crashChildEnv set. It commits registrations as fast as it can, printing
// "committed SELECTOR" after each commit returns, until it is killed (or a bound is reached).
func TestCrashChild(t *testing.T) {
	target := os.Getenv(crashChildEnv)
	if target == "" {
		t.Skip("helper process for TestCrashSafety")
	}
	ctx := context.Background()
	db, err := Open(ctx, Options{OpenString: target, DataKey: testKey(1), Node: "node1"})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	for i := 0; i < 100000; i++ {
		sel := fmt.Sprintf("%06x", i)
		if err := db.PutRegistration(ctx, sampleInstance(sel), sampleDevice(sel), "n", t0); err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(2)
		}
		if i%10 == 0 {
			// Mix in a large batch so the kill often lands inside a long transaction.
			ups := make([]StateUpdate, 0, i+1)
			for j := 0; j <= i; j++ {
				ups = append(ups, StateUpdate{Selector: fmt.Sprintf("%06x", j), State: StateRegisterLoop,
					Status: StatusRegistered, CSeq: uint32(i)})
			}
			if err := db.SaveStates(ctx, ups); err != nil {
				fmt.Printf("error %v\n", err)
				os.Exit(2)
			}
			fmt.Printf("states %d\n", i)
		}
		fmt.Printf("committed %s\n", sel)
	}
	os.Exit(3) // never killed: the parent notices
}

// TestCrashSafety kills (SIGKILL) a child process that is writing, then reopens the database: it
// must be intact and hold every registration the child saw committed. With journal_mode=WAL and
// synchronous=NORMAL a committed transaction is in the WAL (written, not yet fsynced) when
// COMMIT returns, which survives the death of the process (not a power cut). On PostgreSQL the
// server holds the data: the killed client's open transaction is rolled back, every committed
// one stays.
func TestCrashSafety(t *testing.T) { forEachBackend(t, testCrashSafety) }

func testCrashSafety(t *testing.T, b testBackend) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path := b.newTarget(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var committed []string
	lastStates := -1
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if sel, ok := strings.CutPrefix(line, "committed "); ok {
			committed = append(committed, sel)
			if len(committed) >= 300 {
				break
			}
		} else if _, err := fmt.Sscanf(line, "states %d", &lastStates); err != nil {
			t.Errorf("child: %s", line)
			break
		}
	}
	// Kill mid-write: the child is busy committing the next registration or batch.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() { // lines already written before the kill are commits too
		line := sc.Text()
		if sel, ok := strings.CutPrefix(line, "committed "); ok {
			committed = append(committed, sel)
		} else {
			fmt.Sscanf(line, "states %d", &lastStates)
		}
	}
	cmd.Wait()
	if len(committed) < 300 {
		t.Fatalf("child committed only %d registrations", len(committed))
	}

	db := b.openAt(t, path, testKey(1))
	if b.name == SQLite {
		var check string
		if err := db.read.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
			t.Fatalf("integrity_check = %q, %v", check, err)
		}
	}
	for _, sel := range committed {
		in, err := db.Instance(context.Background(), sel)
		if err != nil {
			t.Fatalf("committed registration %s lost: %v", sel, err)
		}
		if sel <= fmt.Sprintf("%06x", lastStates) && (in.State != StateRegisterLoop || int(in.CSeq) < lastStates) {
			t.Fatalf("committed state of %s lost: %s cseq %d, want RegisterLoop cseq >= %d", sel, in.State, in.CSeq, lastStates)
		}
	}
	n, _ := db.CountInstances(context.Background())
	t.Logf("child killed after %d reported commits; %d instances in the reopened database", len(committed), n)
	if n < len(committed) || n > len(committed)+1 {
		t.Errorf("reopened database has %d instances, want %d or one more (commit done, line not written)", n, len(committed))
	}
}
