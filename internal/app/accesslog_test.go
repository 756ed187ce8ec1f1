package app

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/config"
)

// lockedBuffer is a log output safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAccessLog: with <Log><Http RequestBody="Yes"><Filter><Exclude Response="200"/>, every
// request not answered 200 gets one line on the server log (even at Level Warning), with its
// query and form or JSON body, every secret hidden.
func TestAccessLog(t *testing.T) {
	s := testSettings(t, t.TempDir(), "")
	s.Log.HTTP = config.HTTPLog{Enabled: true, RequestBody: true, Exclude: []config.HTTPLogExclude{{Response: 200, Enabled: true}}}
	out := &lockedBuffer{}
	l := logrus.New()
	l.SetOutput(out)
	l.SetLevel(logrus.WarnLevel)
	a, err := New(s, WithLogger(l))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	do := func(method, path, ct, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, a.HTTPURL()+path, strings.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do("GET", "/about", "", ""); code != 200 {
		t.Fatalf("/about = %d", code)
	}
	if code := do("GET", "/no-such-page?s=abc&password=hunter2", "", ""); code != 404 {
		t.Fatalf("no such page = %d", code)
	}
	if code := do("POST", "/sipis/call/progress", "application/json", `{"token":"one-time-secret","note":"hi"}`); code < 400 {
		t.Fatalf("progress with a bad token = %d", code)
	}
	if code := do("POST", "/sipis/register", "application/octet-stream", "sealed-bytes"); code < 400 {
		t.Fatalf("register of garbage = %d", code)
	}
	var lines []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, `msg=http `) {
			lines = append(lines, line)
		}
	}
	text := strings.Join(lines, "\n")
	t.Log(text)
	if len(lines) != 3 {
		t.Fatalf("%d access lines, want 3 (the 200 left out):\n%s", len(lines), out.String())
	}
	for _, want := range []string{
		"path=/no-such-page", "status=404", `query="password=%28hidden%29&s=abc"`,
		"path=/sipis/call/progress", `"note\":\"hi\"`, `\"token\":\"(hidden)\"`,
		"path=/sipis/register", "(12 bytes of application/octet-stream)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("access log lacks %s", want)
		}
	}
	for _, secret := range []string{"hunter2", "one-time-secret", "sealed-bytes"} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("the log shows %q", secret)
		}
	}
	if strings.Contains(text, "path=/about") {
		t.Error("a 200 was logged despite <Exclude Response=\"200\">")
	}
}

// TestAccessLogOff: without <Http> there is no access log.
func TestAccessLogOff(t *testing.T) {
	if newAccessLog(config.HTTPLog{}, logrus.New()) != nil {
		t.Error("access log on without <Http>")
	}
}
