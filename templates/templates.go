// Package templates holds the HTML templates of sipis's web pages,
// embedded in the binary. internal/web parses them once at start:
// layout.html defines the frame ("layout") and every other file defines
// the "content" of one page.
package templates

import "embed"

// FS holds every *.html template.
//
//go:embed *.html
var FS embed.FS
