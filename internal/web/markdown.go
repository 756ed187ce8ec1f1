package web

import (
	"html"
	"html/template"
	"strconv"
	"strings"
)

// renderMarkdown turns the small Markdown subset our CHANGELOG uses into
// safe HTML: ATX headings (# to ######), unordered (-, *, +) and ordered
// (1.) lists, fenced code blocks (```), paragraphs, and inline `code`,
// **bold**, *emphasis* and [links](https://...). Everything else is text;
// all text is escaped, and only http, https and mailto links are kept.
func renderMarkdown(src []byte) template.HTML {
	var b strings.Builder
	lines := strings.Split(strings.ReplaceAll(string(src), "\r\n", "\n"), "\n")
	var para []string
	list := ""        // "ul", "ol" or ""
	var item []string // text of the open list item
	flushPara := func() {
		if len(para) > 0 {
			b.WriteString("<p>" + renderInline(strings.Join(para, " ")) + "</p>\n")
			para = nil
		}
	}
	flushItem := func() {
		if item != nil {
			b.WriteString("<li>" + renderInline(strings.Join(item, " ")) + "</li>\n")
			item = nil
		}
	}
	closeList := func() {
		flushItem()
		if list != "" {
			b.WriteString("</" + list + ">\n")
			list = ""
		}
	}
	openItem := func(kind, text string) {
		flushPara()
		flushItem()
		if list != kind {
			closeList()
			b.WriteString("<" + kind + ">\n")
			list = kind
		}
		item = []string{text}
	}
	for i := 0; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], " \t")
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "```"):
			flushPara()
			closeList()
			b.WriteString("<pre><code>")
			for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
				b.WriteString(html.EscapeString(lines[i]) + "\n")
			}
			b.WriteString("</code></pre>\n")
		case trimmed == "":
			flushPara()
			closeList()
		case headingLevel(trimmed) > 0:
			flushPara()
			closeList()
			n := headingLevel(trimmed)
			tag := "h" + strconv.Itoa(n)
			text := strings.TrimSpace(strings.TrimRight(strings.TrimSpace(trimmed[n:]), "#"))
			b.WriteString("<" + tag + ">" + renderInline(text) + "</" + tag + ">\n")
		case isBullet(trimmed):
			openItem("ul", strings.TrimSpace(trimmed[2:]))
		case orderedItem(trimmed) != "":
			openItem("ol", orderedItem(trimmed))
		case item != nil && (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")):
			item = append(item, trimmed) // continuation of the list item
		default:
			closeList()
			para = append(para, trimmed)
		}
	}
	flushPara()
	closeList()
	return template.HTML(b.String()) // #nosec: every piece above is escaped
}

func headingLevel(s string) int {
	n := 0
	for n < len(s) && n < 7 && s[n] == '#' {
		n++
	}
	if n == 0 || n > 6 || (len(s) > n && s[n] != ' ') {
		return 0
	}
	return n
}

func isBullet(s string) bool {
	return len(s) >= 2 && (s[0] == '-' || s[0] == '*' || s[0] == '+') && s[1] == ' '
}

// orderedItem returns the text of an ordered list item "12. text", or "".
func orderedItem(s string) string {
	i := 0
	for i < len(s) && i < 9 && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 || i+1 >= len(s) || s[i] != '.' || s[i+1] != ' ' {
		return ""
	}
	return strings.TrimSpace(s[i+2:])
}

// renderInline escapes s and renders `code`, **bold**, *em* and
// [text](url) spans.
func renderInline(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		switch {
		case s[0] == '`':
			if j := strings.IndexByte(s[1:], '`'); j >= 0 {
				b.WriteString("<code>" + html.EscapeString(s[1:1+j]) + "</code>")
				s = s[j+2:]
				continue
			}
		case strings.HasPrefix(s, "**"):
			if j := strings.Index(s[2:], "**"); j > 0 {
				b.WriteString("<strong>" + renderInline(s[2:2+j]) + "</strong>")
				s = s[j+4:]
				continue
			}
		case s[0] == '*':
			if j := strings.IndexByte(s[1:], '*'); j > 0 {
				b.WriteString("<em>" + renderInline(s[1:1+j]) + "</em>")
				s = s[j+2:]
				continue
			}
		case s[0] == '[':
			if text, url, rest, ok := cutLink(s); ok {
				if safeURL(url) {
					b.WriteString(`<a href="` + html.EscapeString(url) + `">` + renderInline(text) + "</a>")
				} else {
					b.WriteString(renderInline(text))
				}
				s = rest
				continue
			}
		}
		// Plain text up to the next special character.
		j := strings.IndexAny(s[1:], "`*[")
		if j < 0 {
			j = len(s) - 1
		}
		b.WriteString(html.EscapeString(s[:j+1]))
		s = s[j+1:]
	}
	return b.String()
}

func cutLink(s string) (text, url, rest string, ok bool) {
	end := strings.Index(s, "](")
	if end < 0 {
		return "", "", "", false
	}
	close := strings.IndexByte(s[end+2:], ')')
	if close < 0 {
		return "", "", "", false
	}
	return s[1:end], s[end+2 : end+2+close], s[end+3+close:], true
}

func safeURL(u string) bool {
	l := strings.ToLower(u)
	return strings.HasPrefix(l, "https://") || strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "mailto:")
}
