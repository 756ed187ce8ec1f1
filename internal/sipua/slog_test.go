package sipua_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/sipua"
)

func TestSlogHandlerForwardsToLogrus(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.InfoLevel)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	s := slog.New(sipua.NewSlogHandler(l.WithField("component", "sip")))
	s.Debug("hidden")
	s.With("caller", "tx").WithGroup("g").Warn("hello", "error", "boom", "n", 3)
	out := buf.String()
	for _, want := range []string{"level=warning", "msg=hello", "component=sip", "caller=tx", "g.err=boom", "g.n=3"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in %q", want, out)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Error("debug record passed at info level")
	}
	if slog.New(sipua.NewSlogHandler(nil)).Enabled(t.Context(), slog.LevelError) {
		t.Error("nil logger enabled")
	}
}
