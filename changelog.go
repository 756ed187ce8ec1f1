// Package sipis holds what belongs to the project as a whole: its CHANGELOG, embedded so that
// the about page shows the history of the binary it runs in. The server lives in internal/,
// the registration wire format in pkg/, the commands in cmd/, the documentation in docs/.
//
// It holds no code: only internal/app imports it (for the CHANGELOG), and it must not import
// any package of sipis.
package sipis

import _ "embed"

// Changelog is CHANGELOG.md as it was when the binary was built.
//
//go:embed CHANGELOG.md
var Changelog []byte
