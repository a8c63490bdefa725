package exporter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StoreStats is what the long-term store reports about itself. The
// sqlitestore package implements it; the exporter reads it only at scrape
// time, from the scraping goroutine, so every method must be safe for
// concurrent use and cheap (atomics or a short lock, no queries).
type StoreStats interface {
	// QueueLength is the number of observations waiting to be written.
	QueueLength() int
	// QueueCapacity is the size of the queue; observations arriving when
	// it is full are dropped (and counted by RowsDropped).
	QueueCapacity() int
	// RowsWritten is the number of rows committed since start.
	RowsWritten() uint64
	// RowsDropped is the number of observations never written: queue
	// full, store closed, or abandoned at shutdown.
	RowsDropped() uint64
	// WriteErrors is the number of failed batch writes (the batch may be
	// retried).
	WriteErrors() uint64
	// DatabaseSizeBytes is the size on disk of the main database file
	// plus its WAL. A negative value means unknown; the metric is then
	// omitted from that scrape.
	DatabaseSizeBytes() int64
}

// StoreMetrics holds the store metrics that the store itself must feed:
// the store calls ObserveFlush after every committed batch. To keep the
// store free of an import of this package it can declare its own
// interface:
//
//	type FlushObserver interface{ ObserveFlush(time.Duration) }
//
// which *StoreMetrics satisfies.
type StoreMetrics struct {
	flushDuration prometheus.Histogram
	lastFlush     prometheus.Gauge
	now           func() time.Time
}

// ObserveFlush records a committed batch that took d of work to write
// (begin to commit, without the writer's pacing pauses). Call it only for
// successful commits; failures are counted by StoreStats.WriteErrors. It
// is safe for concurrent use and does not allocate.
func (m *StoreMetrics) ObserveFlush(d time.Duration) {
	m.flushDuration.Observe(d.Seconds())
	m.lastFlush.Set(float64(m.now().UnixNano()) / 1e9)
}

// RegisterStore registers the store metrics on reg:
// ntpexp_store_queue_length, ntpexp_store_queue_capacity,
// ntpexp_store_rows_written_total, ntpexp_store_rows_dropped_total,
// ntpexp_store_write_errors_total and ntpexp_store_database_size_bytes read
// from s at scrape time, and ntpexp_store_flush_duration_seconds and
// ntpexp_store_last_flush_timestamp_seconds fed through the returned
// StoreMetrics' ObserveFlush.
//
// If s also has a method SetFlushObserver(func(time.Duration)),
// RegisterStore calls it with the returned StoreMetrics' ObserveFlush, so
// wiring needs no further step. It panics if a registration fails.
func RegisterStore(reg prometheus.Registerer, s StoreStats) *StoreMetrics {
	m := &StoreMetrics{
		flushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:                            "ntpexp_store_flush_duration_seconds",
			Help:                            "Time the store worked on one batch of observations, begin to commit, without the pauses it takes while keeping up.",
			Buckets:                         []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
			NativeHistogramBucketFactor:     nativeBucketFactor,
			NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
			NativeHistogramMinResetDuration: nativeMinResetDuration,
		}),
		lastFlush: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ntpexp_store_last_flush_timestamp_seconds",
			Help: "Unix time of the last committed batch (0 before the first one).",
		}),
		now: time.Now,
	}
	reg.MustRegister(m.flushDuration, m.lastFlush, newStoreCollector(s))
	if so, ok := s.(interface{ SetFlushObserver(func(time.Duration)) }); ok {
		so.SetFlushObserver(m.ObserveFlush)
	}
	return m
}

type storeCollector struct {
	s                                    StoreStats
	queueLen, queueCap, written, dropped *prometheus.Desc
	writeErrors, size                    *prometheus.Desc
}

func newStoreCollector(s StoreStats) *storeCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &storeCollector{
		s:           s,
		queueLen:    d("ntpexp_store_queue_length", "Observations waiting to be written to the store."),
		queueCap:    d("ntpexp_store_queue_capacity", "Capacity of the store's write queue."),
		written:     d("ntpexp_store_rows_written_total", "Observation rows committed to the store."),
		dropped:     d("ntpexp_store_rows_dropped_total", "Observations never written to the store: write queue full, store closed, or abandoned at shutdown."),
		writeErrors: d("ntpexp_store_write_errors_total", "Failed batch writes to the store (a failed batch may be retried)."),
		size:        d("ntpexp_store_database_size_bytes", "Size of the store's database file plus its write-ahead log."),
	}
}

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queueLen, c.queueCap, c.written, c.dropped, c.writeErrors, c.size} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.queueLen, prometheus.GaugeValue, float64(c.s.QueueLength()))
	ch <- prometheus.MustNewConstMetric(c.queueCap, prometheus.GaugeValue, float64(c.s.QueueCapacity()))
	ch <- prometheus.MustNewConstMetric(c.written, prometheus.CounterValue, float64(c.s.RowsWritten()))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(c.s.RowsDropped()))
	ch <- prometheus.MustNewConstMetric(c.writeErrors, prometheus.CounterValue, float64(c.s.WriteErrors()))
	if n := c.s.DatabaseSizeBytes(); n >= 0 {
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(n))
	}
}
