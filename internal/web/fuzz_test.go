package web

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzRenderMarkdown(f *testing.F) {
	for _, s := range []string{"# a\n- b\n1. c\n```\nd\n```\n", "[x](javascript:alert(1))", "**`<b>`**", "*", "[", "](", hostile} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		out := string(renderMarkdown([]byte(src)))
		low := strings.ToLower(out)
		if strings.Contains(low, "<script") || strings.Contains(low, "javascript:") && strings.Contains(low, "href=\"javascript") {
			t.Fatalf("unsafe output %q from %q", out, src)
		}
		// Every tag in the output is one we emit.
		for i := strings.IndexByte(out, '<'); i >= 0; {
			rest := out[i+1:]
			ok := false
			for _, tag := range []string{"h1>", "h2>", "h3>", "h4>", "h5>", "h6>", "/h", "p>", "/p>", "ul>", "/ul>", "ol>", "/ol>", "li>", "/li>",
				"pre>", "/pre>", "code>", "/code>", "strong>", "/strong>", "em>", "/em>", "a href=\"", "/a>"} {
				if strings.HasPrefix(rest, tag) {
					ok = true
					break
				}
			}
			if !ok {
				t.Fatalf("unexpected tag at %q in %q", rest, out)
			}
			j := strings.IndexByte(rest, '<')
			if j < 0 {
				break
			}
			i += 1 + j
		}
	})
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "a", "\"\\", "\u2028\u2029", "\x00\x1f", "\xff\xfe", hostile, "é漢"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("invalid JSON %q for %q: %v", b, s, err)
		}
		if want := strings.ToValidUTF8(s, "\uFFFD"); utf8.ValidString(s) && got != want {
			t.Fatalf("round trip %q -> %q", s, got)
		}
		x := string(appendXMLText(nil, s))
		if strings.ContainsAny(x, "<>") {
			t.Fatalf("unescaped XML text %q", x)
		}
	})
}

func FuzzSelector(f *testing.F) {
	for _, s := range []string{"", "ab", "AB01", "xyz", hostile, strings.Repeat("a", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := checkSelector(s)
		if (err == nil) != validSelector(s) {
			t.Fatalf("checkSelector(%q) = %v but validSelector = %v", s, err, validSelector(s))
		}
	})
}
