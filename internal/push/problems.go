package push

import (
	"sort"
	"sync"

	"github.com/sirupsen/logrus"
)

// Problem is one kind of configuration error a push service reported: the
// platform and the service's reason (for example apns DeviceTokenNotForTopic).
type Problem struct {
	Platform, Reason string
}

// ProblemCount is a Problem with how often it happened.
type ProblemCount struct {
	Problem
	Count int
}

// Problems counts the configuration errors push services report, in total
// and per selector, and logs each one once per selector and reason: such an
// error (a wrong topic, a sandbox token sent to production, a revoked key)
// repeats on every push until an operator fixes it, and must be seen without
// flooding the log. It is safe for concurrent use; the zero value is ready.
type Problems struct {
	mu     sync.Mutex
	total  map[Problem]int
	perSel map[string]map[Problem]int
}

// maxProblemSelectors bounds the per-selector table, so that a broken
// configuration with many instances does not grow memory without end; the
// totals are always counted.
const maxProblemSelectors = 100000

// Note counts one configuration error of selector and logs it on log the
// first time this selector meets this reason.
func (p *Problems) Note(log logrus.FieldLogger, selector, platform, reason string) {
	k := Problem{Platform: platform, Reason: reason}
	p.mu.Lock()
	if p.total == nil {
		p.total, p.perSel = map[Problem]int{}, map[string]map[Problem]int{}
	}
	p.total[k]++
	m := p.perSel[selector]
	if m == nil && len(p.perSel) < maxProblemSelectors {
		m = map[Problem]int{}
		p.perSel[selector] = m
	}
	first := false
	if m != nil {
		first = m[k] == 0
		m[k]++
	}
	p.mu.Unlock()
	if first {
		logger(log).WithFields(logrus.Fields{"selector": selector, "platform": platform, "reason": reason}).
			Error("push: the push service refused a push because of the configuration (the token is kept; fix the app id, topic, environment or key); logged once per selector and reason")
	}
}

// Totals returns every problem seen with its count, sorted by platform and
// reason.
func (p *Problems) Totals() []ProblemCount {
	p.mu.Lock()
	defer p.mu.Unlock()
	return sorted(p.total)
}

// For returns the problems of one selector, sorted.
func (p *Problems) For(selector string) []ProblemCount {
	p.mu.Lock()
	defer p.mu.Unlock()
	return sorted(p.perSel[selector])
}

func sorted(m map[Problem]int) []ProblemCount {
	out := make([]ProblemCount, 0, len(m))
	for k, n := range m {
		out = append(out, ProblemCount{Problem: k, Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Platform != out[j].Platform {
			return out[i].Platform < out[j].Platform
		}
		return out[i].Reason < out[j].Reason
	})
	return out
}
