package sipua

import (
	"context"
	"log/slog"

	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
	logrusslog "github.com/sirupsen/logrus/hooks/slog"
)

// SetLibraryLogger sends the log lines of the SIP library (sipgo logs
// through log/slog, process-wide) to l. Call it once at start-up; nil
// discards them.
func SetLibraryLogger(l logrus.FieldLogger) {
	sip.SetDefaultLogger(slog.New(NewSlogHandler(l)))
}

// NewSlogHandler returns a slog.Handler that forwards records to a logrus
// logger, keeping attributes and the fields of l as fields; nil means
// discard. It is logrus's own bridge (logrus/hooks/slog) with two
// settings of sipis: slog's levels map as below, and an attribute named
// "error" becomes the field "err", as every sipis log line names it.
func NewSlogHandler(l logrus.FieldLogger) slog.Handler {
	if l == nil {
		return slog.DiscardHandler
	}
	e := l.WithFields(nil) // any FieldLogger: its logger and its fields
	h := logrusslog.NewHandler(e.Logger, &logrusslog.HandlerOptions{LevelMapper: toLogrus})
	attrs := make([]slog.Attr, 0, len(e.Data))
	for k, v := range e.Data {
		attrs = append(attrs, slog.Any(k, v))
	}
	return errField{h.WithAttrs(attrs)}
}

// toLogrus maps slog's levels to logrus's: below Info is Debug (sipgo logs
// no finer), and nothing maps to Fatal or Panic.
func toLogrus(l slog.Level) logrus.Level {
	switch {
	case l >= slog.LevelError:
		return logrus.ErrorLevel
	case l >= slog.LevelWarn:
		return logrus.WarnLevel
	case l >= slog.LevelInfo:
		return logrus.InfoLevel
	}
	return logrus.DebugLevel
}

// errField renames the attributes named "error", also inside groups, to
// "err" before they reach the wrapped handler.
type errField struct{ slog.Handler }

func (h errField) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(renameErr(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h errField) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = renameErr(a)
	}
	return errField{h.Handler.WithAttrs(out)}
}

func (h errField) WithGroup(name string) slog.Handler {
	return errField{h.Handler.WithGroup(name)}
}

func renameErr(a slog.Attr) slog.Attr {
	a.Value = a.Value.Resolve()
	if a.Key == "error" {
		a.Key = "err"
	}
	if a.Value.Kind() == slog.KindGroup {
		g := a.Value.Group()
		out := make([]slog.Attr, len(g))
		for i, x := range g {
			out[i] = renameErr(x)
		}
		a.Value = slog.GroupValue(out...)
	}
	return a
}
