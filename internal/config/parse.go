package config

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

const (
	// maxFileBytes caps a settings file; real ones are a few kilobytes.
	maxFileBytes = 4 << 20
	// maxDepth caps element nesting; the schema is five levels deep.
	maxDepth = 16
	// maxChain caps the Defaults chain.
	maxChain = 8
	// parseName is the file name Parse reports in errors.
	parseName = "settings"
)

// source is one settings document.
type source struct {
	name  string // as shown in errors
	dir   string // relative paths are resolved against it; "" keeps them
	data  []byte
	order int // position in the load order
}

// node is one element of a settings document.
type node struct {
	src        *source
	name       string
	line       int
	start, end int64 // byte offsets of the start tag
	attrs      []xml.Attr
	kids       []*node
}

// attrValue returns the raw value of the attribute called name.
func (n *node) attrValue(name string) (string, bool) {
	for _, a := range n.attrs {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

// attrLine returns the line of attribute name in n's start tag, or n's own
// line when name is empty or cannot be found.
func (n *node) attrLine(name string) int {
	data := n.src.data
	if name == "" || n.start < 0 || n.end > int64(len(data)) || n.start >= n.end {
		return n.line
	}
	tag := data[n.start:n.end]
	for from := 0; from < len(tag); {
		i := bytes.Index(tag[from:], []byte(name))
		if i < 0 {
			break
		}
		i += from
		j := i + len(name)
		from = j
		if i == 0 || !isSpace(tag[i-1]) {
			continue
		}
		for j < len(tag) && isSpace(tag[j]) {
			j++
		}
		if j < len(tag) && tag[j] == '=' {
			return n.line + bytes.Count(tag[:i], []byte("\n"))
		}
	}
	return n.line
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Load reads the settings file at path: first its Defaults chain (each
// Defaults attribute names a file relative to the file naming it; a cycle
// is an error), then the file itself over Default. Relative paths are
// resolved against the folder of the file that names them, defaults against
// the folder of path. The result is validated.
func Load(path string) (*Settings, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	l := newLoader(filepath.Dir(abs))
	data, err := readLimited(abs)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	l.chain = append(l.chain, abs)
	return l.run(&source{name: path, dir: filepath.Dir(abs), data: data})
}

// Parse is Load from bytes: dir is the folder relative paths and a Defaults
// attribute are resolved against ("" leaves relative paths as they are).
// Errors name the document "settings".
func Parse(data []byte, dir string) (*Settings, error) {
	return newLoader(dir).run(&source{name: parseName, dir: dir, data: data})
}

// loader applies one Defaults chain over the defaults.
type loader struct {
	s     *Settings
	pos   map[string]*node // see binder.pos
	chain []string         // absolute paths of the files being loaded
	order int
	known map[string]bool // when non-nil, records every name bound (tests)
}

func newLoader(dir string) *loader {
	s := Default()
	resolvePaths(s, dir)
	return &loader{s: s, pos: make(map[string]*node)}
}

// run applies src (after its Defaults chain), reads secret files and
// validates.
func (l *loader) run(src *source) (*Settings, error) {
	if err := l.apply(src); err != nil {
		return nil, err
	}
	if errs := readSecrets(l.s, l.locate); len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	errs := validate(l.s)
	for _, e := range errs {
		l.locate(e)
	}
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	return l.s, nil
}

// apply loads src's Defaults chain, then binds src over l.s.
func (l *loader) apply(src *source) error {
	root, perr := parseTree(src)
	if perr != nil {
		return perr
	}
	if v, _ := root.attrValue("Defaults"); strings.TrimSpace(v) != "" {
		if err := l.applyDefaults(src, root, v); err != nil {
			return err
		}
	}
	l.order++
	src.order = l.order
	b := &binder{src: src, pos: l.pos, known: l.known}
	e := b.elem(root, []string{"Sipis"}, "Sipis")
	bindRoot(e, l.s)
	e.done()
	return joinErrors(b.errs)
}

// applyDefaults loads the file named by the Defaults attribute v of root.
func (l *loader) applyDefaults(src *source, root *node, v string) error {
	fail := func(msg string) error {
		return &Error{File: src.name, Line: root.attrLine("Defaults"), Path: []string{"Sipis"},
			Attr: "Defaults", Value: v, Msg: msg, order: l.order}
	}
	if len(l.chain) >= maxChain {
		return fail(fmt.Sprintf("more than %d files in the Defaults chain", maxChain))
	}
	abs := v
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(src.dir, v)
	}
	abs, err := filepath.Abs(abs)
	if err != nil {
		return fail(err.Error())
	}
	for _, p := range l.chain {
		if p == abs {
			return fail("Defaults cycle: " + strings.Join(append(l.chain, abs), " -> "))
		}
	}
	data, err := readLimited(abs)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return fail("cannot read the file: " + pe.Err.Error())
		}
		return fail(err.Error())
	}
	name := v
	if !filepath.IsAbs(v) && src.name != parseName {
		name = filepath.Join(filepath.Dir(src.name), v)
	}
	l.chain = append(l.chain, abs)
	defer func() { l.chain = l.chain[:len(l.chain)-1] }()
	return l.apply(&source{name: name, dir: filepath.Dir(abs), data: data})
}

// locate fills e's file and line from the element or attribute that set the
// value at fault, if a file did.
func (l *loader) locate(e *Error) {
	n := l.pos[e.key]
	if n == nil && e.Attr != "" {
		n = l.pos[strings.SplitN(e.key, "@", 2)[0]+"@"]
	}
	if n == nil {
		return
	}
	e.File, e.order = n.src.name, n.src.order
	e.Line = n.attrLine(e.Attr)
	if raw, ok := n.attrValue(e.Attr); ok && e.Attr != "" {
		e.Value = raw // as written, not as resolved
	}
}

// openRegular opens path if it is a regular file: opening a FIFO or a device
// named by mistake must not hang or flood the loader.
func openRegular(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &os.PathError{Op: "open", Path: path, Err: errors.New("not a regular file")}
	}
	return os.Open(path)
}

func readLimited(path string) ([]byte, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFileBytes)
	}
	return data, nil
}

// parseTree reads src into a tree of elements, recording each start tag's
// line and byte offsets.
func parseTree(src *source) (*node, *Error) {
	fail := func(line int, path []string, msg string) *Error {
		return &Error{File: src.name, Line: line, Path: path, Msg: msg, order: src.order}
	}
	d := xml.NewDecoder(bytes.NewReader(src.data))
	d.Strict = true
	var root *node
	var stack []*node
	for {
		line, _ := d.InputPos()
		start := d.InputOffset()
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			var se *xml.SyntaxError
			if errors.As(err, &se) {
				return nil, fail(se.Line, nil, "malformed XML: "+se.Msg)
			}
			return nil, fail(line, nil, "malformed XML: "+err.Error())
		}
		switch t := tok.(type) {
		case xml.StartElement:
			n := &node{src: src, name: t.Name.Local, line: line, start: start, end: d.InputOffset(),
				attrs: append([]xml.Attr(nil), t.Attr...)}
			seen := make(map[xml.Name]bool, len(n.attrs))
			for _, a := range n.attrs {
				if seen[a.Name] {
					return nil, &Error{File: src.name, Line: n.attrLine(a.Name.Local), Path: []string{n.name},
						Attr: a.Name.Local, Msg: "attribute given twice", order: src.order}
				}
				seen[a.Name] = true
			}
			switch {
			case len(stack) >= maxDepth:
				return nil, fail(line, []string{n.name}, fmt.Sprintf("elements nested more than %d deep", maxDepth))
			case len(stack) > 0:
				parent := stack[len(stack)-1]
				parent.kids = append(parent.kids, n)
			case root != nil:
				return nil, fail(line, []string{n.name}, "a second root element; the file must hold one <Sipis>")
			case n.name != "Sipis":
				return nil, fail(line, []string{n.name}, "root element must be <Sipis>")
			default:
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if txt := strings.TrimSpace(string(t)); txt != "" {
				lead := string(t)[:strings.Index(string(t), txt)]
				line += strings.Count(lead, "\n")
				var path []string
				if len(stack) > 0 {
					path = []string{stack[len(stack)-1].name}
				}
				return nil, fail(line, path, fmt.Sprintf("unexpected text %q: settings are attributes", shorten(txt)))
			}
		}
	}
	if root == nil {
		return nil, fail(0, nil, "no <Sipis> root element")
	}
	return root, nil
}
