package web

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

var (
	bigOnce sync.Once
	bigFake *fakeBackend
)

// big returns a shared fake backend holding 100,000 instances.
func big() *fakeBackend {
	bigOnce.Do(func() {
		bigFake = newFake()
		bigFake.seedN(100_000)
	})
	return bigFake
}

// discardWriter is a ResponseWriter that counts and drops the body.
type discardWriter struct {
	h    http.Header
	code int
	n    int64
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

func benchPath(b *testing.B, path string, basic []string) {
	s, _ := newTestServer(b, big())
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.RemoteAddr = "127.0.0.1:40000"
	if basic != nil {
		r.SetBasicAuth(basic[0], basic[1])
	}
	var n int64
	b.ReportAllocs()
	for b.Loop() {
		w := &discardWriter{h: http.Header{}}
		s.Handler().ServeHTTP(w, r)
		if w.code != 0 && w.code != http.StatusOK {
			b.Fatalf("%s: status %d", path, w.code)
		}
		n = w.n
	}
	b.SetBytes(n)
}

// BenchmarkInstancesJSON100k streams every one of 100,000 instances.
func BenchmarkInstancesJSON100k(b *testing.B) { benchPath(b, "/stats/instances/json", nil) }

// BenchmarkInstancesXML100k streams every one of 100,000 instances.
func BenchmarkInstancesXML100k(b *testing.B) { benchPath(b, "/stats/instances/xml", nil) }

// BenchmarkStatsFirstPage100k renders the first page of /stats over
// 100,000 instances (median/MAD over all of them included).
func BenchmarkStatsFirstPage100k(b *testing.B) { benchPath(b, "/stats", nil) }

// BenchmarkStatsFirstPageAdmin100k is the same page with admin actions.
func BenchmarkStatsFirstPageAdmin100k(b *testing.B) { benchPath(b, "/stats", admin) }

// BenchmarkSummaryJSON100k renders the summary over 100,000 instances.
func BenchmarkSummaryJSON100k(b *testing.B) { benchPath(b, "/stats/summary/json", nil) }

// BenchmarkSelectors100k renders the first page of /selectors.
func BenchmarkSelectors100k(b *testing.B) { benchPath(b, "/selectors", nil) }
