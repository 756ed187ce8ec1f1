package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// The resume scan: what a starting node reads to hold every instance again.
//
// A node restarted with a million instances must read them all before it can schedule their
// refreshes, and that read is most of its start-up time. So ScanInstances differs from
// ForEachInstance in what costs time at that scale:
//   - it walks several ranges of selectors at once (SQLite in WAL mode and PostgreSQL both
//     serve concurrent readers), each in keyset pages like ForEachInstance;
//   - it reads only what resuming needs (not the settings JSON), and each instance's device
//     count in the same row (a correlated count over the devices' primary key) instead of a
//     separate grouped query held in a map of a million selectors;
//   - it reuses one Instance per range and shares the copies of the few distinct values of
//     the low-cardinality columns (domain, proxy, transport, mode, state, status, …), so a
//     row costs a handful of allocations instead of two dozen;
//   - a row whose password does not open is handed to fn with its error instead of ending
//     the scan: one damaged row must not keep a node from holding all the others.

// scanCols are the columns of one ScanInstances row, in order.
const scanCols = `selector, user_name, auth_user, password, domain, proxy, port, transport, expires,
	display_name, mode, off, state, status, last_error, contact_user, call_id, cseq, expires_at,
	created_at, updated_at, last_activity, contact_addr,
	(SELECT count(*) FROM devices d WHERE d.node = instances.node AND d.selector = instances.selector)`

// scanPage is how many rows one query of ScanInstances reads.
const scanPage = 2000

// maxScanParts bounds the ranges ScanInstances walks at once (the read pool's size).
const maxScanParts = readConns

// minPartRows is the fewest instances worth a range of their own.
const minPartRows = 4 * scanPage

// ScanInstances calls fn for every instance of this node, from up to parts goroutines at once,
// each walking its own range of selectors in order; part (0 ≤ part < parts) says which, so fn
// can keep per-range state without locking. fn is never called concurrently for one part.
//
// in is reused for the part's next row once fn returns: fn must copy what it keeps. Settings
// and Node are not read; Devices is the instance's device count. When the row's password does
// not open, err wraps ErrDataKey and names the selector, in holds the rest of the row and
// in.Account.Password is empty; fn decides (returning nil goes on with the next row). An error
// fn returns stops every part and is returned. Like ForEachInstance, no read transaction is held
// while fn runs, and an instance written during the scan may or may not be seen.
func (db *DB) ScanInstances(ctx context.Context, parts int, fn func(part int, in *Instance, err error) error) error {
	bounds, err := db.scanBounds(ctx, parts)
	if err != nil {
		return fmt.Errorf("store: scan instances: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for p := range len(bounds) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hi := ""
			if p+1 < len(bounds) {
				hi = bounds[p+1]
			}
			if err := db.scanRange(ctx, p, bounds[p], hi, fn); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	return first
}

// scanBounds splits this node's selectors into at most parts ranges of about equal size and
// returns their exclusive lower bounds; the first is "" (every selector is longer).
func (db *DB) scanBounds(ctx context.Context, parts int) ([]string, error) {
	parts = min(max(parts, 1), maxScanParts)
	bounds := []string{""}
	if parts == 1 {
		return bounds, nil
	}
	n, err := db.CountInstances(ctx)
	if err != nil {
		return nil, err
	}
	parts = min(parts, max(n/minPartRows, 1))
	for k := 1; k < parts; k++ {
		var sel string
		err := db.read.QueryRowContext(ctx, `SELECT selector FROM instances WHERE node = ?
			ORDER BY selector LIMIT 1 OFFSET ?`, db.node, k*n/parts-1).Scan(&sel)
		if err == sql.ErrNoRows {
			break // deleted meanwhile: fewer ranges
		}
		if err != nil {
			return nil, err
		}
		if sel > bounds[len(bounds)-1] {
			bounds = append(bounds, sel)
		}
	}
	return bounds, nil
}

// scanRange walks the selectors in (lo, hi] ("" hi: no upper bound) for ScanInstances.
func (db *DB) scanRange(ctx context.Context, part int, lo, hi string, fn func(int, *Instance, error) error) error {
	q := `SELECT ` + scanCols + ` FROM instances WHERE node = ? AND selector > ? ORDER BY selector LIMIT ?`
	if hi != "" {
		q = `SELECT ` + scanCols + ` FROM instances WHERE node = ? AND selector > ? AND selector <= ?
			ORDER BY selector LIMIT ?`
	}
	var (
		r     scanRow
		in    Instance
		page  []scanRow
		share = make(sharedStrings)
		last  = lo
	)
	for {
		args := []any{db.node, last, scanPage}
		if hi != "" {
			args = []any{db.node, last, hi, scanPage}
		}
		rows, err := db.read.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("store: scan instances: %w", err)
		}
		// The page is copied out of the rows before fn runs, so that no read is held open
		// while fn works (fn may write).
		page = page[:0]
		for rows.Next() {
			if err := r.scan(rows, share); err != nil {
				rows.Close()
				return fmt.Errorf("store: scan instances: %w", err)
			}
			page = append(page, r)
			r.password = nil // the page now owns it
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("store: scan instances: %w", err)
		}
		for i := range page {
			err := db.fill(&in, &page[i])
			if err := fn(part, &in, err); err != nil {
				return err
			}
		}
		if len(page) < scanPage {
			return nil
		}
		last = page[len(page)-1].in.Selector
	}
}

// scanRow is one row of scanCols as read, its password still sealed.
type scanRow struct {
	in       Instance
	password []byte
	cseq     int64
	times    [4]int64 // expires_at, created_at, updated_at, last_activity
}

// scan reads the current row of rows into r, sharing the low-cardinality strings through share.
func (r *scanRow) scan(rows *sql.Rows, share sharedStrings) error {
	var domain, proxy, transport, mode, state, status, lastErr, display, addr sql.RawBytes
	a := &r.in.Account
	err := rows.Scan(&r.in.Selector, &a.User, &a.AuthUser, &r.password, &domain, &proxy, &a.Port, &transport,
		&a.Expires, &display, &mode, &r.in.Off, &state, &status, &lastErr, &r.in.ContactUser, &r.in.CallID,
		&r.cseq, &r.times[0], &r.times[1], &r.times[2], &r.times[3], &addr, &r.in.Devices)
	if err != nil {
		return err
	}
	a.Domain, a.Proxy, a.Transport = share.get(domain), share.get(proxy), share.get(transport)
	a.DisplayName, r.in.Mode, r.in.State, r.in.Status = share.get(display), share.get(mode), share.get(state), share.get(status)
	r.in.LastError, r.in.ContactAddr = share.get(lastErr), share.get(addr)
	return nil
}

// fill sets in from the row r, opening its password (in.Account.Password stays empty, and the
// error says why, when it does not open).
func (db *DB) fill(in *Instance, r *scanRow) error {
	*in = r.in
	in.Node = db.node
	in.CSeq = uint32(r.cseq)
	in.ExpiresAt, in.CreatedAt = fromNanos(r.times[0]), fromNanos(r.times[1])
	in.UpdatedAt, in.LastActivity = fromNanos(r.times[2]), fromNanos(r.times[3])
	plain, err := db.seal.open(r.password, adPassword(in.Selector))
	if err != nil {
		return fmt.Errorf("%w: password of selector %s", err, in.Selector)
	}
	in.Account.Password = string(plain)
	clear(plain)
	return nil
}

// sharedStrings hands out one copy of each distinct value of a column with few distinct values,
// so that a million rows naming the same proxy hold one string. It stops taking new values at
// maxShared (a column that turns out to be diverse is then copied per row, as usual).
type sharedStrings map[string]string

// maxShared bounds a sharedStrings.
const maxShared = 4096

func (s sharedStrings) get(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if v, ok := s[string(b)]; ok { // no allocation for the lookup
		return v
	}
	v := string(b)
	if len(s) < maxShared {
		s[v] = v
	}
	return v
}
