package web

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const maxSelectorLen = 128

// validSelector reports whether s is a selector: 1 to 128 hex digits.
func validSelector(s string) bool {
	if s == "" || len(s) > maxSelectorLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// checkSelector validates a selector taken from parameter s; the echo in
// the error is quoted and capped (templates escape it again).
func checkSelector(s string) error {
	if s == "" {
		return badRequest("missing selector: add ?s=SELECTOR (hex)")
	}
	if !validSelector(s) {
		echo := s
		if len(echo) > 80 {
			echo = echo[:80] + "..."
		}
		return badRequest("selector %q is not valid: a selector is 1 to %d hexadecimal digits", echo, maxSelectorLen)
	}
	return nil
}

// querySelector returns the s query parameter. When required is false a
// missing or empty s gives "" (every instance).
func querySelector(r *http.Request, required bool) (string, error) {
	vals, ok := r.URL.Query()["s"]
	if !ok || (len(vals) == 1 && vals[0] == "" && !required) {
		if required {
			return "", checkSelector("")
		}
		return "", nil
	}
	if len(vals) != 1 {
		return "", badRequest("give the selector parameter s only once")
	}
	if err := checkSelector(vals[0]); err != nil {
		return "", err
	}
	return strings.ToLower(vals[0]), nil // selectors are stored in lowercase
}

func notFoundSelector(sel string) error {
	return &httpError{code: http.StatusNotFound, msg: fmt.Sprintf("no instance with selector %q", sel)}
}

// pageParams are the ?page= (1-based) and ?n= (rows per page) parameters.
type pageParams struct {
	Page, N int
}

func (s *Server) queryPage(r *http.Request) (pageParams, error) {
	p := pageParams{Page: 1, N: s.opts.PageSize}
	q := r.URL.Query()
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1<<30 {
			return p, badRequest("page must be a positive whole number, not %q", trimEcho(v))
		}
		p.Page = n
	}
	if v := q.Get("n"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageSize {
			return p, badRequest("n must be a whole number from 1 to %d, not %q", MaxPageSize, trimEcho(v))
		}
		p.N = n
	}
	return p, nil
}

func (p pageParams) offset() int { return (p.Page - 1) * p.N }

func trimEcho(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// pager is the navigation data of a paginated table.
type pager struct {
	Page, Pages, N, Total int
	Prev, Next            string // URLs, "" when none
}

func newPager(base string, p pageParams, total int) pager {
	pages := max(1, (total+p.N-1)/p.N)
	pg := pager{Page: p.Page, Pages: pages, N: p.N, Total: total}
	link := func(page int) string { return fmt.Sprintf("%s?page=%d&n=%d", base, page, p.N) }
	if p.Page > 1 {
		pg.Prev = link(min(p.Page-1, pages))
	}
	if p.Page < pages {
		pg.Next = link(p.Page + 1)
	}
	return pg
}

func formatUptime(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Truncate(time.Second)
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h := d / time.Hour
	d -= h * time.Hour
	m := d / time.Minute
	d -= m * time.Minute
	sec := d / time.Second
	if days > 0 {
		return fmt.Sprintf("%dd %dh %dm %ds", days, h, m, sec)
	}
	return fmt.Sprintf("%dh %dm %ds", h, m, sec)
}

// formatBytes is a human size: 512 B, 1.5 KiB, 3.2 MiB ...
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// formatRate is a human bit rate: 12.3 bit/s, 4.5 kbit/s ...
func formatRate(x float64) string {
	switch {
	case x >= 1e9:
		return fmt.Sprintf("%.1f Gbit/s", x/1e9)
	case x >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.1f kbit/s", x/1e3)
	default:
		return fmt.Sprintf("%.2f bit/s", x)
	}
}
