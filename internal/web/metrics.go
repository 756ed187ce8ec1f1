package web

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NewCollector returns a Prometheus collector that reads b at each scrape:
// instances by state, incoming call outcomes, test push outcomes and the
// message loop queue. Registering it is the caller's choice; each scrape
// waits at most timeout (default 5 s) for the instance counts.
func NewCollector(b StatsSource, timeout time.Duration) prometheus.Collector {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &collector{
		b:       b,
		timeout: timeout,
		instances: prometheus.NewDesc("sipis_instances",
			"Instances by state (Idle, Registering, Registered, Unauthorized, Error).", []string{"state"}, nil),
		calls: prometheus.NewDesc("sipis_incoming_calls_total",
			"Incoming calls by outcome (accepted, missed, rejected), counted from the stored call records.", []string{"outcome"}, nil),
		rejected: prometheus.NewDesc("sipis_incoming_calls_rejected_total",
			"Rejected incoming calls by reason, counted from the stored call records.", []string{"reason"}, nil),
		pushTests: prometheus.NewDesc("sipis_push_tests_total",
			"Test pushes since start by platform and outcome.", []string{"platform", "outcome"}, nil),
		queue: prometheus.NewDesc("sipis_message_loop_queue_size",
			"Events waiting in the instance manager's message loop.", nil, nil),
	}
}

type collector struct {
	b                                            StatsSource
	timeout                                      time.Duration
	instances, calls, rejected, pushTests, queue *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.instances
	ch <- c.calls
	ch <- c.rejected
	ch <- c.pushTests
	ch <- c.queue
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if n, err := c.b.InstanceCounts(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(c.instances, err)
	} else {
		for state, v := range map[string]int{"Idle": n.Idle, "Registering": n.Registering,
			"Registered": n.Registered, "Unauthorized": n.Unauthorized, "Error": n.Error} {
			ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(v), state)
		}
	}
	calls := c.b.CallOutcomes()
	for outcome, v := range map[string]int{"accepted": calls.Accepted, "missed": calls.Missed, "rejected": calls.Rejected} {
		ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(v), outcome)
	}
	for reason, v := range calls.RejectedByReason {
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(v), reason)
	}
	for platform, counts := range c.b.PushTestOutcomes() {
		for outcome, v := range counts {
			ch <- prometheus.MustNewConstMetric(c.pushTests, prometheus.CounterValue, float64(v), platform, outcome)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(c.b.Server().MessageLoopQueueSize))
}
