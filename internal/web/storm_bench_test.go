package web

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// BenchmarkGuessStorm sends b.N wrong administrator passwords from 96
// parallel connections to a real listener whose password is a bcrypt hash
// of the default cost, while one more client keeps fetching /healthz. In
// "many-addresses" every guess names another client through a trusted
// proxy's X-Forwarded-For (a distributed attacker: only the bound on
// concurrent checks applies); in "one-address" all come from one client
// (the per-address lockout applies). It reports the password checks run
// per second, the guesses shed with 503 or refused with 429, and /healthz
// latency during the storm. Run it with
//
//	go test -run '^$' -bench GuessStorm -benchtime 300x ./internal/web
func BenchmarkGuessStorm(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	for _, many := range []bool{true, false} {
		name := "one-address"
		if many {
			name = "many-addresses"
		}
		b.Run(name, func(b *testing.B) {
			f := newFake()
			f.adminGate = func() { _ = bcrypt.CompareHashAndPassword(hash, []byte("guess")) }
			s, _ := newTestServer(b, f, func(o *Options) {
				o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
				o.Now = time.Now
			})
			if err := s.Open(); err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			tr := &http.Transport{MaxIdleConnsPerHost: 128}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}

			stop := make(chan struct{})
			var lat []time.Duration
			healthDone := make(chan struct{})
			go func() {
				defer close(healthDone)
				for {
					select {
					case <-stop:
						return
					default:
					}
					t0 := time.Now()
					resp, err := client.Get(s.URL() + "/healthz")
					if err != nil || resp.StatusCode != 200 {
						b.Errorf("/healthz during the storm: %v", err)
						return
					}
					resp.Body.Close()
					lat = append(lat, time.Since(t0))
				}
			}()

			var next atomic.Int64
			var mu sync.Mutex
			codes := map[int]int{}
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range 96 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						req, _ := http.NewRequest("GET", s.URL()+"/debug/pprof/cmdline", nil)
						req.SetBasicAuth("admin", "guess")
						client := "192.0.2.1"
						if many {
							client = fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
						}
						req.Header.Set("X-Forwarded-For", client)
						resp, err := tr.RoundTrip(req)
						if err != nil {
							b.Error(err)
							return
						}
						resp.Body.Close()
						mu.Lock()
						codes[resp.StatusCode]++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(stop)
			<-healthDone
			f.mu.Lock()
			checks := f.adminChecks
			f.mu.Unlock()
			if codes[200] != 0 || codes[401] != checks {
				b.Fatalf("answers %v with %d checks", codes, checks)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(checks)/elapsed.Seconds(), "checks/s")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "guesses-answered/s")
			b.ReportMetric(float64(codes[503])/float64(b.N), "shed-503/op")
			b.ReportMetric(float64(codes[429])/float64(b.N), "locked-429/op")
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "healthz-p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "healthz-p99-ms")
			}
		})
	}
}
