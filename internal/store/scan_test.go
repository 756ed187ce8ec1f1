package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestScanInstances(t *testing.T) { forEachBackend(t, testScanInstances) }

func testScanInstances(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	const n = 3*minPartRows + 17 // enough for two ranges and more
	fill(t, db, n)
	// One instance as the registration API stores it, with two devices.
	full := sampleInstance("ffffffff01")
	mustPut(t, db, full, sampleDevice(full.Selector), "n1")
	dev2 := sampleDevice(full.Selector)
	dev2.ID = "dev-2"
	mustPut(t, db, sampleInstance(full.Selector), dev2, "n2")
	want, err := db.Instance(ctx, full.Selector)
	if err != nil {
		t.Fatal(err)
	}
	// One row whose password does not open.
	const bad = "00000010"
	if _, err := db.write.Exec("UPDATE instances SET password = ? WHERE selector = ?", []byte{1, 2, 3}, bad); err != nil {
		t.Fatal(err)
	}

	for _, parts := range []int{1, 2} {
		t.Run(fmt.Sprint(parts), func(t *testing.T) {
			var mu sync.Mutex
			seen := map[string]int{}
			last := map[int]string{}
			var badErr error
			err := db.ScanInstances(ctx, parts, func(p int, in *Instance, err error) error {
				mu.Lock()
				defer mu.Unlock()
				if p < 0 || p >= parts {
					return fmt.Errorf("part %d of %d", p, parts)
				}
				if in.Selector <= last[p] {
					return fmt.Errorf("part %d: %s after %s", p, in.Selector, last[p])
				}
				last[p] = in.Selector
				seen[in.Selector]++
				switch {
				case in.Selector == bad:
					badErr = err
					if in.Account.Password != "" {
						return errors.New("the bad row came with a password")
					}
				case err != nil:
					return err
				case in.Selector == full.Selector:
					got := *in
					w := *want
					w.Settings, w.Devices = nil, 2 // the scan reads no settings, and counts devices
					if !reflect.DeepEqual(got, w) {
						return fmt.Errorf("scanned\n%+v\nwant\n%+v", got, w)
					}
				case in.Account.Password != "pw" || in.Devices != 0 || in.Node != "node1" || in.CallID != "call-"+in.Selector:
					return fmt.Errorf("instance %s read wrong: %+v", in.Selector, in)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != n+1 {
				t.Errorf("scanned %d selectors, want %d", len(seen), n+1)
			}
			for sel, k := range seen {
				if k != 1 {
					t.Errorf("%s scanned %d times", sel, k)
				}
			}
			if len(last) != parts {
				t.Errorf("%d of %d ranges delivered rows", len(last), parts)
			}
			if !errors.Is(badErr, ErrDataKey) || !strings.Contains(fmt.Sprint(badErr), bad) {
				t.Errorf("bad row: err = %v, want ErrDataKey naming %s", badErr, bad)
			}
		})
	}

	// An error of fn stops every range and is returned.
	stop := errors.New("stop")
	var mu sync.Mutex
	calls := 0
	err = db.ScanInstances(ctx, 2, func(int, *Instance, error) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls > 2 {
		t.Errorf("stopping: err %v after %d calls", err, calls)
	}
}

// BenchmarkScanInstances reads every stored instance per iteration through ScanInstances in
// two ranges, the read a resume does; compare BenchmarkForEachInstance.
func BenchmarkScanInstances(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		c0 := cpuNow()
		for b.Loop() {
			var count [maxScanParts]int
			if err := db.ScanInstances(ctx, 2, func(p int, _ *Instance, err error) error { count[p]++; return err }); err != nil {
				b.Fatal(err)
			}
			if count[0]+count[1] != benchInstances {
				b.Fatalf("scanned %d of %d", count[0]+count[1], benchInstances)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchInstances), "ns/instance")
		// The machine may be shared: the process's CPU time is the steadier figure.
		b.ReportMetric(float64(cpuNow()-c0)/float64(b.N*benchInstances), "cpu-ns/instance")
	})
}

// cpuNow is the process's CPU time (user and system) in nanoseconds.
func cpuNow() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
