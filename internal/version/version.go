// Package version holds the build's version, stamped from git by the Makefile through
// -ldflags "-X"; a plain `go build` says "dev". It imports nothing of sipis and holds no logic
// beyond formatting the stamp.
package version

import "strings"

// Set at build time with -ldflags "-X github.com/sipis/sipis/internal/version.Version=...".
var (
	// Version is `git describe --tags --always --dirty`, e.g. v0.1.0-3-gabc1234.
	Version = "dev"
	// Build is the commit the binary was built from.
	Build = "unknown"
	// Date is the commit time of Build (RFC 3339, UTC), so that rebuilding an unchanged
	// tree gives the same binary.
	Date = ""
)

// Number returns the numeric part of Version ("0.1.0" of "v0.1.0-3-gabc1234"), or "0.0.0"
// when Version is not a version number (a bare commit hash such as "8f2487f", or "dev").
func Number() string {
	v := strings.TrimPrefix(Version, "v")
	end := strings.IndexFunc(v, func(c rune) bool { return !(c >= '0' && c <= '9' || c == '.') })
	if end < 0 {
		end = len(v)
	}
	num := v[:end]
	if num == "" || !strings.Contains(num, ".") || end < len(v) && v[end] != '-' && v[end] != '+' {
		return "0.0.0"
	}
	return num
}
