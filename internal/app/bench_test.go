package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/store"
)

// BenchmarkPages100k times the pages of docs/http.md through the whole server (manager,
// store, web) with 100,000 instances in the store: /stats/instances/json streamed to the
// end, /stats (first page) and /stats/summary/json.
func BenchmarkPages100k(b *testing.B) {
	const n = 100_000
	dir := b.TempDir()
	s := testSettings(b, dir, "")
	s.Sip.Register.ResumeWindow = 24 * time.Hour // hold them; nothing registers during the benchmark
	key := make([]byte, 32)
	log := logrus.New()
	log.SetOutput(io.Discard)
	db, err := store.Open(context.Background(), store.Options{Path: filepath.Join(dir, "sipis.db"), DataKey: key, Node: s.Server.Name, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := range n {
		sel := fmt.Sprintf("%016x", i+1)
		inst := &store.Instance{Selector: sel, Node: s.Server.Name, Mode: store.ModeBackground, LastActivity: now, CreatedAt: now,
			Account: store.Account{User: fmt.Sprintf("u%07d", i), Password: "pw", Domain: "sipis.test", Proxy: "127.0.0.1", Port: 5060, Transport: "udp"}}
		if err := db.PutRegistration(context.Background(), inst, &store.Device{Selector: sel, ID: "d", Platform: "none", LastSeen: now},
			fmt.Sprintf("n%016d", i), now); err != nil {
			b.Fatal(err)
		}
	}
	db.Close()
	s.Keys.DataKey = configSecret("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=") // the key above, in base64
	a, err := New(s, WithLogger(log))
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer a.Stop()
	if got := a.Manager().Len(); got != n {
		b.Fatalf("%d instances loaded", got)
	}
	fillTrends(a, now) // /stats draws its charts over a full day of samples
	for _, page := range []string{"/stats/instances/json", "/stats", "/stats/summary/json"} {
		b.Run(page, func(b *testing.B) {
			for range b.N {
				resp, err := http.Get(a.HTTPURL() + page)
				if err != nil {
					b.Fatal(err)
				}
				nb, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("%s: %s", page, resp.Status)
				}
				b.ReportMetric(float64(nb), "bytes")
			}
		})
	}
}
