package app

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis"
	"github.com/sipis/sipis/internal/config"
)

var changelog = sipis.Changelog

// newLogger builds the server's logger from <Log>: level, text or JSON, to a standard stream,
// a file, both or neither.
func newLogger(c config.Log) (*logrus.Logger, *os.File, error) {
	l := logrus.New()
	l.SetLevel(c.Level)
	if c.Format == config.FormatJSON {
		l.SetFormatter(&logrus.JSONFormatter{})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	}
	var outs []io.Writer
	switch c.Stdio {
	case config.StdioStdout:
		outs = append(outs, os.Stdout)
	case config.StdioStderr:
		outs = append(outs, os.Stderr)
	}
	var f *os.File
	if c.FileName != "" {
		if err := os.MkdirAll(filepath.Dir(c.FileName), 0o755); err != nil {
			return nil, nil, err
		}
		var err error
		if f, err = os.OpenFile(c.FileName, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err != nil {
			return nil, nil, err
		}
		outs = append(outs, f)
	}
	switch len(outs) {
	case 0:
		l.SetOutput(io.Discard)
	case 1:
		l.SetOutput(outs[0])
	default:
		l.SetOutput(io.MultiWriter(outs...))
	}
	return l, f, nil
}

// errNoInstanceLog answers /log when <Log InstanceFileName="/dev/null"> turned instance logs off.
var errNoInstanceLog = statusError{code: http.StatusConflict,
	msg: `instance logs are off on this server (<Log InstanceFileName="/dev/null">)`}

// statusError is an error the web server shows with its status code.
type statusError struct {
	code int
	msg  string
}

func (e statusError) Error() string   { return e.msg }
func (e statusError) StatusCode() int { return e.code }

// instanceLogsOff reports whether <Log InstanceFileName="/dev/null"> turned instance logs off.
func (a *App) instanceLogsOff() bool {
	return a.settings.Log.InstanceFileName == config.NoInstanceLog
}

// instanceLogPath is the file of one selector's detailed log.
func (a *App) instanceLogPath(selector string) string {
	return strings.ReplaceAll(a.settings.Log.InstanceFileName, "{selector}", selector)
}

// instanceLogger returns the logger that writes one selector's detailed log file, opening the
// file on first use. Selectors are validated hex, so they are safe in a file name.
func (a *App) instanceLogger(selector string) logrus.FieldLogger {
	if a.instanceLogsOff() {
		return nil
	}
	a.instLogsMu.Lock()
	defer a.instLogsMu.Unlock()
	if l := a.instLogs[selector]; l != nil {
		return l
	}
	path := a.instanceLogPath(selector)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		a.log.WithField("err", err).Warn("cannot create the instance log folder")
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		a.log.WithField("err", err).Warn("cannot open the instance log")
		return nil
	}
	l := logrus.New()
	l.SetOutput(f)
	l.SetLevel(logrus.TraceLevel)
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	a.instLogs[selector] = l
	return l
}
