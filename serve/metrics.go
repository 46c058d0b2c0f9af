package serve

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the server's Prometheus series, on a registry of their own
// so that two servers in one process (tests) do not collide. The model
// label is the model id a request named: the base or one of its adapters.
type Metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	promptTokens *prometheus.CounterVec
	genTokens    *prometheus.CounterVec
	ttft         *prometheus.HistogramVec
	queueDepth   prometheus.Gauge
	running      prometheus.Gauge
	batchSize    prometheus.Histogram
}

// NewMetrics registers lqc's series and the Go runtime's.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lqc_requests_total", Help: "HTTP requests by endpoint, model and status code.",
		}, []string{"endpoint", "model", "code"}),
		promptTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lqc_prompt_tokens_total", Help: "Prompt tokens evaluated, by model.",
		}, []string{"model"}),
		genTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lqc_generated_tokens_total", Help: "Tokens generated, by model.",
		}, []string{"model"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lqc_time_to_first_token_seconds", Help: "From a request's arrival to its first generated token.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"model"}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lqc_queue_depth", Help: "Requests waiting for a session.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lqc_running_requests", Help: "Requests holding a session.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lqc_batch_size", Help: "Requests advanced together by one decode step.",
			Buckets: prometheus.LinearBuckets(1, 1, 16),
		}),
	}
	m.reg.MustRegister(m.requests, m.promptTokens, m.genTokens, m.ttft, m.queueDepth, m.running, m.batchSize,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
