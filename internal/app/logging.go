package app

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis"
	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/web"
)

var changelog = sipis.Changelog

// logrusLevel maps a Settings.xml log level to logrus's: Warning is logrus's Warn; the rest
// have the same names. config keeps its own type so that it does not depend on the logger.
func logrusLevel(l config.Level) logrus.Level {
	switch l {
	case config.LevelFatal:
		return logrus.FatalLevel
	case config.LevelError:
		return logrus.ErrorLevel
	case config.LevelWarning:
		return logrus.WarnLevel
	case config.LevelInfo:
		return logrus.InfoLevel
	case config.LevelDebug:
		return logrus.DebugLevel
	}
	return logrus.TraceLevel
}

// newLogger builds the server's logger from <Log>: level, text or JSON, to a standard stream,
// a file, both or neither.
func newLogger(c config.Log) (*logrus.Logger, *os.File, error) {
	l := logrus.New()
	l.SetLevel(logrusLevel(c.Level))
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

// maxLoggedBody bounds how much of a request body the access log reads and shows.
const (
	maxLoggedBody     = 64 << 10
	maxLoggedBodyText = 2048
)

// newAccessLog returns the middleware of <Log><Http>: one line per request (method, path,
// query with secrets hidden, status, size, duration, client) at level Info on the server log's
// outputs and format, whatever the log's Level. Requests answered with an excluded status are
// left out. With RequestBody, form and JSON bodies are added with every password, secret,
// token and key hidden; other bodies by size and type only. Nil when the access log is off.
func newAccessLog(c config.HTTPLog, base *logrus.Logger) func(http.Handler) http.Handler {
	if !c.Enabled {
		return nil
	}
	l := logrus.New()
	l.SetOutput(base.Out)
	l.SetFormatter(base.Formatter)
	l.SetLevel(logrus.InfoLevel)
	skip := map[int]bool{}
	for _, x := range c.Exclude {
		if x.Enabled {
			skip[x.Response] = true
		}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			var body string
			if c.RequestBody && r.Body != nil && r.Body != http.NoBody {
				buf, err := io.ReadAll(io.LimitReader(r.Body, maxLoggedBody+1))
				r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
				if err == nil {
					body = describeBody(r.Header.Get("Content-Type"), buf)
				}
			}
			aw := &web.StatusWriter{ResponseWriter: w}
			next.ServeHTTP(aw, r)
			if aw.Status == 0 {
				aw.Status = http.StatusOK
			}
			if skip[aw.Status] {
				return
			}
			f := logrus.Fields{
				"method": r.Method, "path": r.URL.Path, "status": aw.Status, "bytes": aw.Bytes,
				"duration": time.Since(start).Round(time.Microsecond), "client": r.RemoteAddr,
			}
			if r.URL.RawQuery != "" {
				f["query"] = hideQuery(r.URL.Query())
			}
			if body != "" {
				f["body"] = body
			}
			l.WithFields(f).Info("http")
		})
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// secretName reports whether a form field, query parameter or JSON key may hold a secret.
func secretName(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"pass", "secret", "token", "key", "csrf", "auth", "cred", "nonce"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

const hidden = "(hidden)"

func hideQuery(q url.Values) string {
	for k, vs := range q {
		if secretName(k) {
			for i := range vs {
				vs[i] = hidden
			}
		}
	}
	return q.Encode()
}

// describeBody shows a request body for the access log with its secrets hidden.
func describeBody(contentType string, b []byte) string {
	mt, _, _ := mime.ParseMediaType(contentType)
	cut := ""
	if len(b) > maxLoggedBody {
		b, cut = b[:maxLoggedBody], "+"
	}
	var out string
	switch mt {
	case "application/x-www-form-urlencoded":
		q, err := url.ParseQuery(string(b))
		if err != nil {
			return fmt.Sprintf("(%d%s bytes of malformed form)", len(b), cut)
		}
		out = hideQuery(q)
	case "application/json":
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Sprintf("(%d%s bytes of malformed JSON)", len(b), cut)
		}
		j, _ := json.Marshal(hideJSON(v))
		out = string(j)
	default:
		if mt == "" {
			mt = "no type"
		}
		return fmt.Sprintf("(%d%s bytes of %s)", len(b), cut, mt)
	}
	if len(out) > maxLoggedBodyText {
		out = out[:maxLoggedBodyText] + "…"
	}
	return out
}

func hideJSON(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if secretName(k) {
				t[k] = hidden
			} else {
				t[k] = hideJSON(x)
			}
		}
	case []any:
		for i := range t {
			t[i] = hideJSON(t[i])
		}
	}
	return v
}
