package call

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCallerOf feeds header values from the network to the caller-identity parser: it must not
// panic, and what it returns (shown on a phone) holds no control characters and stays bounded.
func FuzzCallerOf(f *testing.F) {
	for _, s := range []string{`"A \"q\" B" <sip:a@x>;tag=1`, "<sip:+1@x;user=phone>, <tel:+1>", "sip:f@x;tag=abc",
		`"unterminated <sip:x`, "<", `"\`, "a,b,<c,d>", ""} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, pai, from string) {
		name, uri := callerOf(func(n string) string {
			if n == "P-Asserted-Identity" {
				return pai
			}
			return ""
		}, from)
		if len(name) > 256 || len(uri) > 512 {
			t.Fatalf("unbounded: %d, %d", len(name), len(uri))
		}
		if strings.ContainsFunc(name+uri, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			t.Fatalf("control character in %q %q", name, uri)
		}
		if utf8.ValidString(pai) && utf8.ValidString(from) && (!utf8.ValidString(name) || !utf8.ValidString(uri)) {
			t.Fatalf("valid UTF-8 in, invalid out: %q %q", name, uri)
		}
	})
}
