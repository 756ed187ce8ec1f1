package web

import (
	"context"
	"errors"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/sipis/sipis/templates"
)

// SelectorSource is what /selectors reads.
type SelectorSource interface {
	// Selectors calls fn for every known selector, in ascending order,
	// with the time of its last activity.
	Selectors(ctx context.Context, fn func(selector string, lastActivity time.Time) error) error
}

// DebugSource is what /debug reads: one instance's data, which the page titles
// and formats itself (debug.go).
type DebugSource interface {
	// Debug returns everything known about one instance; ErrNotFound if
	// there is none. Secrets must already be masked (see InstanceDebug).
	Debug(ctx context.Context, selector string) (InstanceDebug, error)
}

// SettingsSource is what /settings reads.
type SettingsSource interface {
	// AppSettings returns every field the app sent when it registered, in
	// a stable order; ErrNotFound if there is no such instance. Passwords
	// must already be masked as "Not Empty" or "Empty".
	AppSettings(ctx context.Context, selector string) ([]Field, error)
}

// InstanceAdmin is what the administrator's actions change: /log and the
// test-push and turn-off buttons of /stats and /debug.
type InstanceAdmin interface {
	// TestPush sends a test push notification to every device of the
	// instance and reports how each ended; ErrNotFound if no instance.
	TestPush(ctx context.Context, selector string) ([]PushResult, error)
	// PushTestOutcomes counts test pushes since start: platform (e.g.
	// "APNs", "FCM", "Webhook") -> outcome -> count.
	PushTestOutcomes() map[string]Counts
	// TurnOff turns one instance off (unREGISTER, then Idle).
	TurnOff(ctx context.Context, selector string) error
	// TurnOffAll turns every instance off and returns how many it turned off.
	TurnOffAll(ctx context.Context) (int, error)
	// EnableInstanceLog turns on detailed logging for the instance and
	// returns the path of the file the log goes to.
	EnableInstanceLog(ctx context.Context, selector string) (path string, err error)
}

// pageNames are the templates; each is parsed together with layout.html.
var pageNames = []string{
	"about.html", "stats.html", "debug.html", "log.html", "selectors.html",
	"settings.html", "action.html", "error.html", "probes.html",
}

var funcs = template.FuncMap{
	"bytes":  formatBytes,
	"rate":   formatRate,
	"time":   formatTime,
	"plural": plural,
	"sorted": func(c Counts) []namedCount { return c.sorted() },
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func parseTemplates() (map[string]*template.Template, error) {
	out := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templates.FS, "layout.html", name)
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

// pageBase is what the layout needs on every page.
type pageBase struct {
	Title      string
	Nonce      string
	ServerName string
	Admin      string // the administrator's user name when authenticated
	CSRF       string // the CSRF token for Admin's forms
}

func (s *Server) base(r *http.Request, title string) pageBase {
	return pageBase{Title: title, Nonce: nonceFrom(r), ServerName: s.stats.Server().Name}
}

func (p *pageBase) setAdmin(s *Server, user string) {
	p.Admin = user
	if user != "" {
		p.CSRF = s.csrfToken(user)
	}
}

type errorPage struct {
	pageBase
	Code    int
	Message string
}

func (s *Server) registerPageRoutes(r *mux.Router) {
	r.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/stats", http.StatusSeeOther)
	}).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/about", s.handleAbout).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/selectors", s.handleSelectors).Methods(http.MethodGet, http.MethodHead)
}

type aboutPage struct {
	pageBase
	Info      serverView
	Changelog template.HTML
}

func (s *Server) handleAbout(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "about.html", &aboutPage{
		pageBase:  s.base(r, "About"),
		Info:      s.serverView(),
		Changelog: s.changelog,
	})
}

type selectorRow struct {
	Selector     string
	LastActivity time.Time
}

type selectorsPage struct {
	pageBase
	Rows  []selectorRow
	Pager pager
}

func (s *Server) handleSelectors(w http.ResponseWriter, r *http.Request) {
	pp, err := s.queryPage(r)
	if err != nil {
		s.error(w, r, err)
		return
	}
	from, to := pp.offset(), pp.offset()+pp.N
	total := 0
	var rows []selectorRow
	err = s.selectors.Selectors(r.Context(), func(sel string, last time.Time) error {
		if total >= from && total < to {
			rows = append(rows, selectorRow{Selector: sel, LastActivity: last})
		}
		total++
		return nil
	})
	if err != nil {
		s.error(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "selectors.html", &selectorsPage{
		pageBase: s.base(r, "Selectors"),
		Rows:     rows,
		Pager:    newPager("/selectors", pp, total),
	})
}

func (s *Server) registerAdminRoutes(r *mux.Router) {
	r.HandleFunc("/login", s.handleLogin).Methods(http.MethodGet)
	r.HandleFunc("/debug", s.handleDebug).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/log", s.handleLog).Methods(http.MethodGet)
	r.HandleFunc("/settings", s.handleSettings).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/stats/actions/testpush", s.handleTestPush).Methods(http.MethodPost)
	r.HandleFunc("/stats/actions/turnoff", s.handleTurnOff).Methods(http.MethodPost)
	r.HandleFunc("/stats/actions/turnoffall", s.handleTurnOffAll).Methods(http.MethodPost)
}

// handleLogin asks the browser for the admin's Basic credentials; once it
// has them the browser sends them with every later request, so /stats
// shows the admin actions.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if _, err := s.requireAdmin(r); err != nil {
		s.error(w, r, err)
		return
	}
	http.Redirect(w, r, "/stats", http.StatusSeeOther)
}

// maskField hides secrets the backend should already have masked:
// passwords and secrets become "Not Empty"/"Empty", tokens are shortened.
func maskField(f Field) Field {
	n := strings.ToLower(f.Name)
	switch {
	case strings.Contains(n, "password") || strings.Contains(n, "passwd") ||
		strings.Contains(n, "secret") || strings.Contains(n, "privatekey") || strings.Contains(n, "private key"):
		if f.Value != "Not Empty" && f.Value != "Empty" {
			if f.Value == "" {
				f.Value = "Empty"
			} else {
				f.Value = "Not Empty"
			}
		}
	case strings.Contains(n, "token"):
		f.Value = shortenToken(f.Value)
	}
	return f
}

// shortenToken keeps the first 6 characters of a token: enough to tell
// devices apart, not enough to push to them.
func shortenToken(t string) string {
	if utf8.RuneCountInString(t) <= 8 {
		if t == "" {
			return ""
		}
		return "…"
	}
	r := []rune(t)
	return string(r[:6]) + "…"
}

func maskFields(fs []Field) []Field {
	out := make([]Field, len(fs))
	for i, f := range fs {
		out[i] = maskField(f)
	}
	return out
}

type debugPage struct {
	pageBase
	Selector string
	Sections []DebugSection
	Ladder   *ladderView
	// Results are those of a test push sent from this page.
	Results []PushResult
	Message string
}

func (s *Server) handleDebug(w http.ResponseWriter, r *http.Request) {
	user, sel, ok := s.adminSelector(w, r)
	if !ok {
		return
	}
	s.renderDebug(w, r, user, sel, nil, "")
}

// renderDebug answers with the /debug page of sel, with the results of a test push sent from
// it when there are any.
func (s *Server) renderDebug(w http.ResponseWriter, r *http.Request, user, sel string, results []PushResult, msg string) {
	info, err := s.debug.Debug(r.Context(), sel)
	if err != nil {
		s.error(w, r, selectorError(sel, err))
		return
	}
	secs := debugSections(info)
	for i, sec := range secs {
		sec.Fields = maskFields(sec.Fields)
		sec.Text = redactSIP(sec.Text) // the last REGISTER's Authorization: "Not Empty"
		secs[i] = sec
	}
	p := &debugPage{pageBase: s.base(r, "Debug "+sel), Selector: sel, Sections: secs, Ladder: buildLadder(info.Ladder),
		Results: results, Message: msg}
	p.setAdmin(s, user)
	s.render(w, r, http.StatusOK, "debug.html", p)
}

// adminSelector authenticates the administrator and reads the required ?s= parameter; when
// either fails it has answered, and ok is false.
func (s *Server) adminSelector(w http.ResponseWriter, r *http.Request) (user, sel string, ok bool) {
	user, err := s.requireAdmin(r)
	if err == nil {
		sel, err = querySelector(r, true)
	}
	if err != nil {
		s.error(w, r, err)
		return "", "", false
	}
	return user, sel, true
}

// selectorError turns the backend's ErrNotFound into a 404 naming sel.
func selectorError(sel string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return notFoundSelector(sel)
	}
	return err
}

type settingsPage struct {
	pageBase
	Selector string
	Fields   []Field
}

func (s *Server) handleSettings(w http.ResponseWriter, r *http.Request) {
	user, sel, ok := s.adminSelector(w, r)
	if !ok {
		return
	}
	fields, err := s.settings.AppSettings(r.Context(), sel)
	if err != nil {
		s.error(w, r, selectorError(sel, err))
		return
	}
	p := &settingsPage{pageBase: s.base(r, "Settings "+sel), Selector: sel, Fields: maskFields(fields)}
	p.setAdmin(s, user)
	s.render(w, r, http.StatusOK, "settings.html", p)
}

type logPage struct {
	pageBase
	Selector  string
	Path      string
	Content   string
	Size      int64
	Truncated bool
}

// handleLog turns on the instance log (the only GET that changes
// anything, as the contract says) and shows the end of the file.
func (s *Server) handleLog(w http.ResponseWriter, r *http.Request) {
	user, sel, ok := s.adminSelector(w, r)
	if !ok {
		return
	}
	path, err := s.admin.EnableInstanceLog(r.Context(), sel)
	if err != nil {
		s.error(w, r, selectorError(sel, err))
		return
	}
	s.log.WithField("selector", sel).Info("instance log turned on from the web")
	content, size, truncated, err := tailFile(path, s.opts.LogTailBytes)
	if err != nil {
		s.error(w, r, err)
		return
	}
	p := &logPage{pageBase: s.base(r, "Log "+sel), Selector: sel, Path: path,
		Content: content, Size: size, Truncated: truncated}
	p.setAdmin(s, user)
	s.render(w, r, http.StatusOK, "log.html", p)
}

// tailFile returns the last max bytes of path, starting at a line boundary
// when cut; a missing file is empty.
func tailFile(path string, max int64) (content string, size int64, truncated bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", 0, false, nil
	}
	if err != nil {
		return "", 0, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, false, err
	}
	size = st.Size()
	off := int64(0)
	if size > max {
		off, truncated = size-max, true
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, size-off))
	if err != nil {
		return "", 0, false, err
	}
	if truncated {
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD"), size, truncated, nil
}

type actionPage struct {
	pageBase
	Message  string
	Selector string
	Results  []PushResult
	Push     pushTestOutcomes
}

// readActionForm caps and parses an action's form.
func (s *Server) readActionForm(w http.ResponseWriter, r *http.Request) (string, error) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return "", badRequest("cannot read the form: %v", err)
	}
	return s.requireAdminPost(r)
}

func (s *Server) handleTestPush(w http.ResponseWriter, r *http.Request) {
	user, err := s.readActionForm(w, r)
	if err != nil {
		s.error(w, r, err)
		return
	}
	sel := r.PostFormValue("s")
	if err := checkSelector(sel); err != nil {
		s.error(w, r, err)
		return
	}
	results, err := s.admin.TestPush(r.Context(), sel)
	if err != nil {
		s.error(w, r, selectorError(sel, err))
		return
	}
	s.log.WithField("selector", sel).WithField("admin", user).Info("test push sent from the web")
	msg := "Test push sent to instance " + sel + "."
	if len(results) == 0 {
		msg = "Instance " + sel + " has no device to push to."
	}
	if r.PostFormValue("return") == "debug" { // sent from /debug: show the results there
		s.renderDebug(w, r, user, sel, results, msg)
		return
	}
	p := &actionPage{pageBase: s.base(r, "Test push"), Message: msg, Selector: sel,
		Results: results, Push: newPushTestOutcomes(s.admin.PushTestOutcomes())}
	p.setAdmin(s, user)
	s.render(w, r, http.StatusOK, "action.html", p)
}

func (s *Server) handleTurnOff(w http.ResponseWriter, r *http.Request) {
	user, err := s.readActionForm(w, r)
	if err != nil {
		s.error(w, r, err)
		return
	}
	sel := r.PostFormValue("s")
	if err := checkSelector(sel); err != nil {
		s.error(w, r, err)
		return
	}
	if err := s.admin.TurnOff(r.Context(), sel); err != nil {
		s.error(w, r, selectorError(sel, err))
		return
	}
	s.log.WithField("selector", sel).WithField("admin", user).Info("instance turned off from the web")
	p := &actionPage{pageBase: s.base(r, "Turn off"), Message: "Instance " + sel + " turned off.", Selector: sel}
	p.setAdmin(s, user)
	s.render(w, r, http.StatusOK, "action.html", p)
}

func (s *Server) handleTurnOffAll(w http.ResponseWriter, r *http.Request) {
	user, err := s.readActionForm(w, r)
	if err != nil {
		s.error(w, r, err)
		return
	}
	if r.PostFormValue("confirm") != "1" {
		s.error(w, r, badRequest("turning off all instances needs confirm=1 (uncheck Lock first)"))
		return
	}
	n, err := s.admin.TurnOffAll(r.Context())
	if err != nil {
		s.error(w, r, err)
		return
	}
	s.log.WithField("admin", user).WithField("count", n).Warn("all instances turned off from the web")
	p := &actionPage{pageBase: s.base(r, "Turn off all"), Message: "Turned off " + itoa(n) + " " + plural(n, "instance", "instances") + "."}
	p.setAdmin(s, user)
	s.render(w, r, http.StatusOK, "action.html", p)
}
