// Package version holds the build's version, stamped from git by the Makefile through
// -ldflags "-X"; a plain `go build` says "dev".
package version

// Set at build time with -ldflags "-X github.com/sipis/sipis/internal/version.Version=...".
var (
	// Version is `git describe --tags --always --dirty`, e.g. v0.1.0-3-gabc1234.
	Version = "dev"
	// Build is the commit the binary was built from.
	Build = "unknown"
	// Date is when the binary was built (RFC 3339, UTC).
	Date = ""
)

// Number returns the numeric part of Version ("0.1.0" of "v0.1.0-3-gabc1234"), or "0.0.0".
func Number() string {
	v := Version
	if len(v) > 0 && v[0] == 'v' {
		v = v[1:]
	}
	for i, c := range v {
		if !(c >= '0' && c <= '9' || c == '.') {
			v = v[:i]
			break
		}
	}
	if v == "" {
		return "0.0.0"
	}
	return v
}
