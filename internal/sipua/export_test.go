package sipua

import "time"

// NewWithTimers is New with the server transactions' T1 and T2 shortened, so that tests see
// a whole Timer G/H cycle (RFC 3261 §17.2.1) in well under a second.
func NewWithTimers(cfg Config, t1, t2 time.Duration) (*UA, error) {
	u, err := New(cfg)
	if err != nil {
		return nil, err
	}
	u.setTimers(t1, t2)
	return u, nil
}
