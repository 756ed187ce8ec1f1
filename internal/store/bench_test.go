package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkSaveStates measures one SaveStates call of a 500-update batch (the engine's batch size)
// over 10,000 stored instances.
func BenchmarkSaveStates(b *testing.B) {
	ctx := context.Background()
	db, _ := openTest(b)
	const n, batch = 10000, 500
	fill(b, db, n)
	ups := make([]StateUpdate, batch)
	start := 0
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for j := range ups {
			ups[j] = StateUpdate{Selector: fmt.Sprintf("%08x", (start+j)%n), State: StateRegisterLoop,
				Status: StatusRegistered, CSeq: uint32(i), ExpiresAt: t0.Add(time.Hour), At: t0}
		}
		start += batch
		if err := db.SaveStates(ctx, ups); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/update")
}

// BenchmarkForEachInstance100k walks 100,000 instances (passwords opened) per iteration.
func BenchmarkForEachInstance100k(b *testing.B) {
	ctx := context.Background()
	db, _ := openTest(b)
	const n = 100000
	fill(b, db, n)
	b.ResetTimer()
	for b.Loop() {
		count := 0
		if err := db.ForEachInstance(ctx, func(*Instance) error { count++; return nil }); err != nil {
			b.Fatal(err)
		}
		if count != n {
			b.Fatalf("walked %d instances, want %d", count, n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/instance")
}

// BenchmarkPutRegistration measures one accepted registration (nonce, instance upsert, device
// upsert: one transaction) over 1,000 selectors.
func BenchmarkPutRegistration(b *testing.B) {
	ctx := context.Background()
	db, _ := openTest(b)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		sel := fmt.Sprintf("%04x", i%1000)
		if err := db.PutRegistration(ctx, sampleInstance(sel), sampleDevice(sel), fmt.Sprint("n", i), t0); err != nil {
			b.Fatal(err)
		}
	}
}
