package app

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"
)

// TestRoutesDocumented keeps docs/http.md true to the router the server actually serves:
// every route mounted (the web pages, the device routes, the admin pages given by app, the
// PBX-hook API, /debug/pprof) must have a "### METHODS /path" heading there with the same
// methods, and every such heading must name a mounted route. The server is started the way
// main starts it, with the PBX-hook mode on so that its routes are mounted too.
func TestRoutesDocumented(t *testing.T) {
	verifier := newAccountVerifier(t)
	s := testSettings(t, t.TempDir(), fmt.Sprintf(`
  <PbxHook Enabled="Yes">
    <PbxNetworks><Network Address="127.0.0.1/32"/></PbxNetworks>
    <DeviceVerifier Url="%s/verify"/>
  </PbxHook>`, verifier.URL))
	a := startApp(t, s)
	defer a.Stop()

	mounted, err := mountedRoutes(a)
	if err != nil {
		t.Fatal(err)
	}
	docPath := filepath.Join(repoRoot(t), "docs", "http.md")
	documented, err := documentedRoutes(docPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounted) < 20 {
		// The walk itself must see the server's routes; a handful means it walked the wrong router.
		t.Fatalf("the router walk found only %d routes: %v", len(mounted), mounted)
	}
	for _, path := range routeKeys(mounted) {
		doc, ok := documented[path]
		switch {
		case !ok:
			t.Errorf("route %s %s is mounted but docs/http.md has no heading \"### %s %s\"",
				mounted[path], path, mounted[path], path)
		case doc != mounted[path]:
			t.Errorf("route %s: mounted for %s, docs/http.md says %s", path, mounted[path], doc)
		}
	}
	for _, path := range routeKeys(documented) {
		if _, ok := mounted[path]; !ok {
			t.Errorf("docs/http.md documents %s %s, which the server does not mount", documented[path], path)
		}
	}
}

// mountedRoutes walks the web server's router and returns normalised path -> methods
// ("GET, HEAD"; "ANY" for a route that takes every method).
func mountedRoutes(a *App) (map[string]string, error) {
	methods := map[string][]string{}
	err := a.web.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tmpl, err := route.GetPathTemplate()
		if err != nil {
			return fmt.Errorf("a route without a path template: %w", err)
		}
		re, err := route.GetPathRegexp()
		if err != nil {
			return fmt.Errorf("route %s: %w", tmpl, err)
		}
		path := normalizePath(tmpl, !strings.HasSuffix(re, "$"))
		ms, err := route.GetMethods()
		if err != nil {
			ms = []string{"ANY"} // no method matcher
		}
		methods[path] = append(methods[path], ms...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(methods))
	for path, ms := range methods {
		out[path] = methodList(ms)
	}
	return out, nil
}

// routeHeading is a route's heading in docs/http.md: "### GET, HEAD /stats".
var routeHeading = regexp.MustCompile(`^### ([A-Z]+(?:, [A-Z]+)*) (/\S*)$`)

// documentedRoutes reads the route headings of docs/http.md: normalised path -> methods.
func documentedRoutes(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		m := routeHeading.FindStringSubmatch(sc.Text())
		if m == nil {
			if strings.HasPrefix(sc.Text(), "### ") && strings.Contains(sc.Text(), " /") {
				return nil, fmt.Errorf("%s:%d: %q looks like a route heading but is not \"### METHOD[, METHOD] /path\"", file, line, sc.Text())
			}
			continue
		}
		prefix := strings.HasSuffix(m[2], "*")
		path := normalizePath(strings.TrimSuffix(m[2], "*"), prefix)
		if _, dup := out[path]; dup {
			return nil, fmt.Errorf("%s:%d: %s has two headings", file, line, path)
		}
		out[path] = methodList(strings.Split(m[1], ", "))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no route headings found", file)
	}
	return out, nil
}

// normalizePath writes a mux path template the way docs/http.md does: a variable's pattern
// is dropped ("{platform:apns|fcm}" is "{platform}"), a final slash is dropped (the PBX-hook
// API serves each path with and without it), and a prefix route ends in "*" ("/debug/pprof/*").
func normalizePath(tmpl string, prefix bool) string {
	var b strings.Builder
	for i := 0; i < len(tmpl); i++ {
		c := tmpl[i]
		b.WriteByte(c)
		if c != '{' {
			continue
		}
		// Copy the name, skip the pattern up to the matching brace (patterns may hold braces).
		depth, inName := 1, true
		for i++; i < len(tmpl) && depth > 0; i++ {
			switch tmpl[i] {
			case '{':
				depth++
			case '}':
				depth--
			case ':':
				if depth == 1 {
					inName = false
				}
			}
			if inName || depth == 0 {
				b.WriteByte(tmpl[i])
			}
		}
		i--
	}
	p := b.String()
	if prefix {
		return p + "*"
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return p
}

// methodList is the sorted, de-duplicated list of methods, comma-separated.
func methodList(ms []string) string {
	ms = slices.Clone(ms)
	slices.Sort(ms)
	return strings.Join(slices.Compact(ms), ", ")
}

func routeKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// repoRoot is the folder holding go.mod, found by walking up from the test's folder.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
}

// TestNormalizePath pins the normalisation the route check relies on.
func TestNormalizePath(t *testing.T) {
	for _, c := range []struct {
		tmpl   string
		prefix bool
		want   string
	}{
		{"/", false, "/"},
		{"/stats", false, "/stats"},
		{"/api/incoming-call/", false, "/api/incoming-call"},
		{"/api/{platform:apns|gcm|android|fcm|webhook}-device/", false, "/api/{platform}-device"},
		{"/x/{id:[0-9]{3}}/y", false, "/x/{id}/y"},
		{"/x/{name}", false, "/x/{name}"},
		{"/debug/pprof/", true, "/debug/pprof/*"},
	} {
		if got := normalizePath(c.tmpl, c.prefix); got != c.want {
			t.Errorf("normalizePath(%q, %v) = %q, want %q", c.tmpl, c.prefix, got, c.want)
		}
	}
}
