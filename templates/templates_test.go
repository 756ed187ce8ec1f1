package templates

import (
	"html/template"
	"io/fs"
	"testing"
)

func TestTemplatesParse(t *testing.T) {
	names, err := fs.Glob(FS, "*.html")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 8 {
		t.Fatalf("only %d templates embedded: %v", len(names), names)
	}
	for _, n := range names {
		stub := func(...any) string { return "" }
		if _, err := template.New(n).Funcs(template.FuncMap{
			"bytes": stub, "rate": stub, "time": stub, "plural": stub, "sorted": stub,
		}).ParseFS(FS, "layout.html", n); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}
