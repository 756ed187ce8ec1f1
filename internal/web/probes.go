package web

import (
	"encoding/json"
	"net/http"
	"time"
)

// ProbeSource gives the state of the OPTIONS probes (Options.Probes); internal/app
// implements it over the prober. Without one the probe pages say probing is off.
type ProbeSource interface {
	Probes() []ProbeRow
}

// ProbeRow is one probed target.
type ProbeRow struct {
	Target     string       `json:"target"`
	Transport  string       `json:"transport"`
	State      string       `json:"state"` // "unknown", "up", "down"
	Since      time.Time    `json:"since"`
	LastCode   int          `json:"lastCode"`
	LastReason string       `json:"lastReason"`
	LastRTT    float64      `json:"lastRttMs"`
	LastError  string       `json:"lastError"`
	LastProbe  time.Time    `json:"lastProbe"`
	Failures   int          `json:"failures"`
	Successes  int          `json:"successes"`
	Recent     []ProbeEvent `json:"recent"`
}

// ProbeEvent is one change of a target's state.
type ProbeEvent struct {
	At        time.Time `json:"at"`
	OldState  string    `json:"oldState"`
	NewState  string    `json:"newState"`
	Code      int       `json:"code"`
	LastError string    `json:"lastError"`
}

type probesPage struct {
	pageBase
	Enabled bool
	Rows    []ProbeRow
	Down    int
}

// probeRows returns the probes, or nil and false when probing is off.
func (s *Server) probeRows() ([]ProbeRow, bool) {
	if s.opts.Probes == nil {
		return nil, false
	}
	return s.opts.Probes.Probes(), true
}

func (s *Server) handleProbes(w http.ResponseWriter, r *http.Request) {
	rows, on := s.probeRows()
	p := &probesPage{pageBase: s.base(r, "Probes"), Enabled: on, Rows: rows}
	for _, row := range rows {
		if row.State == "down" {
			p.Down++
		}
	}
	s.render(w, r, http.StatusOK, "probes.html", p)
}

func (s *Server) handleProbesJSON(w http.ResponseWriter, r *http.Request) {
	rows, on := s.probeRows()
	if rows == nil {
		rows = []ProbeRow{}
	}
	body, err := json.Marshal(struct {
		Enabled bool       `json:"enabled"`
		Probes  []ProbeRow `json:"probes"`
	}{on, rows})
	if err != nil {
		s.error(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}
