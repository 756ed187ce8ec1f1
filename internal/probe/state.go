package probe

// health is the per-target state machine: the state and the consecutive
// failure and success counts that drive it.
type health struct {
	state     State
	failures  int
	successes int
}

// step applies one probe result (answered or not) to h. downAfter and upAfter
// are the N and M of Options. An Unknown target comes Up at its first answer:
// nothing was known before, so there is nothing to confirm. Going Up from
// Down needs upAfter answers in a row so a flapping stack is not reported as
// recovered at every lucky packet.
func (h health) step(answered bool, downAfter, upAfter int) health {
	if answered {
		h.failures = 0
		h.successes++
		switch {
		case h.state == Unknown:
			h.state = Up
		case h.state == Down && h.successes >= upAfter:
			h.state = Up
		}
		return h
	}
	h.successes = 0
	h.failures++
	if h.state != Down && h.failures >= downAfter {
		h.state = Down
	}
	return h
}
