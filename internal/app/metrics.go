package app

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sipis/sipis/internal/web"
)

// metrics are the server's own Prometheus series beside web.NewCollector's.
type metrics struct {
	registers *prometheus.CounterVec
}

// newMetrics builds the registry /metrics serves: instances by state, calls and push tests
// (web.NewCollector), REGISTER cycles by final status, SIP bytes, and the Go runtime.
func (a *App) newMetrics(b web.StatsSource) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	a.metrics.registers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sipis_register_transactions_total",
		Help: "REGISTER cycles (challenge included) by final status; status=\"none\" when no final response came.",
	}, []string{"status"})
	reg.MustRegister(
		web.NewCollector(b, 0),
		a.metrics.registers,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sipis_sip_bytes_received_total", Help: "SIP bytes received."},
			func() float64 { return float64(a.ua.Traffic().BytesIn) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sipis_sip_bytes_sent_total", Help: "SIP bytes sent."},
			func() float64 { return float64(a.ua.Traffic().BytesOut) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sipis_registrations_accepted_total", Help: "Registrations accepted from apps."},
			func() float64 { return float64(a.mgr.Stats().Registrations.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sipis_registrations_refused_total", Help: "Registrations refused (bad input, stale, replayed)."},
			func() float64 { return float64(a.mgr.Stats().Rejected.Load()) }),
		problemCollector{a},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

func (a *App) observeRegister(status int, err error) {
	label := "none"
	if err == nil && status > 0 {
		label = strconv.Itoa(status)
	}
	a.metrics.registers.WithLabelValues(label).Inc()
}

// problemCollector exports the push services' configuration errors.
type problemCollector struct{ a *App }

var problemDesc = prometheus.NewDesc("sipis_push_config_errors_total",
	"Pushes refused because of the configuration (wrong topic, environment or key; the token is kept), by platform and the service's reason.",
	[]string{"platform", "reason"}, nil)

// Describe implements prometheus.Collector.
func (problemCollector) Describe(ch chan<- *prometheus.Desc) { ch <- problemDesc }

// Collect implements prometheus.Collector.
func (c problemCollector) Collect(ch chan<- prometheus.Metric) {
	if c.a.push == nil {
		return
	}
	for _, p := range c.a.push.problems.Totals() {
		ch <- prometheus.MustNewConstMetric(problemDesc, prometheus.CounterValue, float64(p.Count), p.Platform, p.Reason)
	}
}
