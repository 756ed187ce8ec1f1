package sipua

import (
	"context"
	"log/slog"

	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
)

// SetLibraryLogger sends the log lines of the SIP library (sipgo logs
// through log/slog, process-wide) to l. Call it once at start-up; nil
// discards them.
func SetLibraryLogger(l logrus.FieldLogger) {
	sip.SetDefaultLogger(slog.New(NewSlogHandler(l)))
}

// NewSlogHandler returns a slog.Handler that forwards records to a logrus
// logger, keeping attributes as fields; nil means discard.
func NewSlogHandler(l logrus.FieldLogger) slog.Handler {
	return &slogHandler{l: l}
}

type slogHandler struct {
	l      logrus.FieldLogger
	fields logrus.Fields
	group  string
}

func (h *slogHandler) Enabled(_ context.Context, lvl slog.Level) bool {
	if h.l == nil {
		return false
	}
	if lg, ok := h.l.(interface{ IsLevelEnabled(logrus.Level) bool }); ok {
		return lg.IsLevelEnabled(toLogrus(lvl))
	}
	if e, ok := h.l.(*logrus.Entry); ok {
		return e.Logger.IsLevelEnabled(toLogrus(lvl))
	}
	return true
}

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

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	if h.l == nil {
		return nil
	}
	f := make(logrus.Fields, len(h.fields)+r.NumAttrs())
	for k, v := range h.fields {
		f[k] = v
	}
	r.Attrs(func(a slog.Attr) bool {
		h.add(f, h.group, a)
		return true
	})
	h.l.WithFields(f).Log(toLogrus(r.Level), r.Message)
	return nil
}

func (h *slogHandler) add(f logrus.Fields, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	key := a.Key
	if key == "error" {
		key = "err"
	}
	if prefix != "" {
		key = prefix + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			h.add(f, key, g)
		}
		return
	}
	f[key] = a.Value.Any()
}

func (h *slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := &slogHandler{l: h.l, group: h.group, fields: make(logrus.Fields, len(h.fields)+len(as))}
	for k, v := range h.fields {
		n.fields[k] = v
	}
	for _, a := range as {
		h.add(n.fields, h.group, a)
	}
	return n
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	g := name
	if h.group != "" {
		g = h.group + "." + name
	}
	return &slogHandler{l: h.l, fields: h.fields, group: g}
}
