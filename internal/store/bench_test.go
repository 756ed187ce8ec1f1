package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/testutil/pgtest"
)

// benchInstances is how many instances every benchmark's database holds: the size one node on
// either backend must carry comfortably.
const benchInstances = 100000

// benchPG is the PostgreSQL server of the benchmarks. Unlike the tests' server it keeps fsync
// on; synchronous_commit=off makes a COMMIT return once its WAL is written, not flushed, which
// is what SQLite's synchronous=NORMAL in WAL mode does: a committed transaction survives the
// death of the process, only an OS crash may lose the last ones. So the two backends are
// compared at the same durability.
var benchPG struct {
	once sync.Once
	srv  *pgtest.Server
	err  error
}

// forEachBenchBackend runs f as a sub-benchmark per backend, on a fresh database holding
// benchInstances instances.
func forEachBenchBackend(b *testing.B, f func(b *testing.B, db *DB)) {
	for _, name := range []Backend{SQLite, PostgreSQL} {
		b.Run(string(name), func(b *testing.B) {
			var target string
			if name == SQLite {
				target = filepath.Join(b.TempDir(), "sipis.db")
			} else {
				benchPG.once.Do(func() {
					benchPG.srv, benchPG.err = pgtest.Start(pgtest.Options{Durable: true,
						Settings: []string{"synchronous_commit=off", "shared_buffers=128MB"}})
				})
				if benchPG.err != nil {
					pgtest.Skip(b, benchPG.err)
				}
				target = benchPG.srv.NewDatabase(b)
			}
			db := testBackend{name: name}.openAt(b, target, testKey(1))
			fill(b, db, benchInstances)
			if db.dialect.analyze != "" {
				// A server that has run a while has statistics (autovacuum); a freshly filled
				// table has none until then, and the planner would take it for nearly empty.
				if _, err := db.write.Exec(db.dialect.analyze); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			f(b, db)
		})
	}
}

// stopBenchPG stops the benchmarks' server, if one was started (from TestMain).
func stopBenchPG() error {
	if benchPG.srv == nil {
		return nil
	}
	return benchPG.srv.Stop()
}

// BenchmarkSaveStates measures one SaveStates call of a 500-update batch (the engine's batch size)
// over the stored instances: the write rate of the engine's persister.
func BenchmarkSaveStates(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		const batch = 500
		ups := make([]StateUpdate, batch)
		start := 0
		for i := 0; b.Loop(); i++ {
			for j := range ups {
				ups[j] = StateUpdate{Selector: fmt.Sprintf("%08x", (start+j)%benchInstances), State: StateRegisterLoop,
					Status: StatusRegistered, CSeq: uint32(i), ExpiresAt: t0.Add(time.Hour), At: t0}
			}
			start += batch
			if err := db.SaveStates(ctx, ups); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/update")
		b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "updates/s")
	})
}

// BenchmarkForEachInstance walks every stored instance (passwords opened) per iteration: the
// engine's resume scan at start.
func BenchmarkForEachInstance(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		c0 := cpuNow()
		for b.Loop() {
			count := 0
			if err := db.ForEachInstance(ctx, func(*Instance) error { count++; return nil }); err != nil {
				b.Fatal(err)
			}
			if count != benchInstances {
				b.Fatalf("walked %d instances, want %d", count, benchInstances)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchInstances), "ns/instance")
		b.ReportMetric(float64(cpuNow()-c0)/float64(b.N*benchInstances), "cpu-ns/instance")
	})
}

// BenchmarkPutRegistration measures one accepted registration (nonce, instance upsert, device
// upsert: one transaction) of one of the stored selectors.
func BenchmarkPutRegistration(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		for i := 0; b.Loop(); i++ {
			sel := fmt.Sprintf("%08x", (i*7919)%benchInstances)
			if err := db.PutRegistration(ctx, sampleInstance(sel), sampleDevice(sel), fmt.Sprint("n", i), t0); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
	})
}
