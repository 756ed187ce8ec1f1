package app

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// FuzzDescribeBody: whatever a client sends, the access log's rendering of its body is bounded
// and shows no value of a field whose name looks secret.
func FuzzDescribeBody(f *testing.F) {
	f.Add(false, "password=hunter2&user=alice")
	f.Add(true, `{"token":"abc","nested":{"secretKey":"x","list":[{"pass":"y"}]}}`)
	f.Add(false, "%zz=1")
	f.Add(true, `[1,2`)
	f.Fuzz(func(t *testing.T, isJSON bool, body string) {
		ct := "application/x-www-form-urlencoded"
		if isJSON {
			ct = "application/json"
		}
		out := describeBody(ct, []byte(body))
		if len(out) > maxLoggedBodyText+len("…") && !strings.HasPrefix(out, "(") {
			t.Fatalf("rendering of %d bytes", len(out))
		}
		if strings.HasPrefix(out, "(") || strings.HasSuffix(out, "…") {
			return // a size note, or cut (then not parseable)
		}
		if !isJSON {
			q, err := url.ParseQuery(out)
			if err != nil {
				t.Fatalf("rendered form does not parse: %q", out)
			}
			for k, vs := range q {
				for _, v := range vs {
					if secretName(k) && v != hidden {
						t.Fatalf("secret field %q shown as %q", k, v)
					}
				}
			}
			return
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("rendered JSON does not parse: %q", out)
		}
		var walk func(any)
		walk = func(x any) {
			switch t2 := x.(type) {
			case map[string]any:
				for k, y := range t2 {
					if secretName(k) && y != hidden {
						t.Fatalf("secret field %q shown as %v", k, y)
					}
					walk(y)
				}
			case []any:
				for _, y := range t2 {
					walk(y)
				}
			}
		}
		walk(v)
	})
}
