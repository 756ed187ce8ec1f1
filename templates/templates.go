// Package templates holds the HTML templates of sipis's web pages,
// embedded in the binary. internal/web parses them once at start:
// layout.html defines the frame ("layout") and every other file defines
// the "content" of one page.
//
// Only internal/web imports it. The templates must not load anything from elsewhere (the
// pages' Content-Security-Policy allows only their own nonce'd scripts and styles) and must
// not be handed a secret to render: the web package passes "Not Empty" instead.
package templates

import "embed"

// FS holds every *.html template.
//
//go:embed *.html
var FS embed.FS
