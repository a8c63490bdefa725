package exporter

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeStore struct {
	sizeUnknown bool
	observe     func(time.Duration)
}

func (f *fakeStore) QueueLength() int    { return 12 }
func (f *fakeStore) QueueCapacity() int  { return 4096 }
func (f *fakeStore) RowsWritten() uint64 { return 1_000_000 }
func (f *fakeStore) RowsDropped() uint64 { return 3 }
func (f *fakeStore) WriteErrors() uint64 { return 1 }
func (f *fakeStore) DatabaseSizeBytes() int64 {
	if f.sizeUnknown {
		return -1
	}
	return 1 << 30
}
func (f *fakeStore) SetFlushObserver(o func(time.Duration)) {
	f.observe = o
}

const storeHeaders = `# HELP ntpexp_store_queue_capacity Capacity of the store's write queue.
# TYPE ntpexp_store_queue_capacity gauge
ntpexp_store_queue_capacity 4096
# HELP ntpexp_store_queue_length Observations waiting to be written to the store.
# TYPE ntpexp_store_queue_length gauge
ntpexp_store_queue_length 12
# HELP ntpexp_store_rows_dropped_total Observations never written to the store: write queue full, store closed, or abandoned at shutdown.
# TYPE ntpexp_store_rows_dropped_total counter
ntpexp_store_rows_dropped_total 3
# HELP ntpexp_store_rows_written_total Observation rows committed to the store.
# TYPE ntpexp_store_rows_written_total counter
ntpexp_store_rows_written_total 1e+06
# HELP ntpexp_store_write_errors_total Failed batch writes to the store (a failed batch may be retried).
# TYPE ntpexp_store_write_errors_total counter
ntpexp_store_write_errors_total 1
`

func TestStoreMetrics(t *testing.T) {
	names := []string{"ntpexp_store_queue_capacity", "ntpexp_store_queue_length", "ntpexp_store_rows_dropped_total",
		"ntpexp_store_rows_written_total", "ntpexp_store_write_errors_total", "ntpexp_store_database_size_bytes",
		"ntpexp_store_last_flush_timestamp_seconds"}
	size := `# HELP ntpexp_store_database_size_bytes Size of the store's database file plus its write-ahead log.
# TYPE ntpexp_store_database_size_bytes gauge
ntpexp_store_database_size_bytes 1.073741824e+09
`
	lastFlush := func(v string) string {
		return `# HELP ntpexp_store_last_flush_timestamp_seconds Unix time of the last committed batch (0 before the first one).
# TYPE ntpexp_store_last_flush_timestamp_seconds gauge
ntpexp_store_last_flush_timestamp_seconds ` + v + "\n"
	}
	tests := []struct {
		name        string
		sizeUnknown bool
		flushes     []time.Duration
		want        string
	}{
		{name: "before the first flush", want: size + lastFlush("0") + storeHeaders},
		{name: "after flushes", flushes: []time.Duration{3 * time.Millisecond, 40 * time.Millisecond}, want: size + lastFlush("1.77236643e+09") + storeHeaders},
		{name: "size unknown", sizeUnknown: true, want: lastFlush("0") + storeHeaders},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			st := &fakeStore{sizeUnknown: tc.sizeUnknown}
			sm := RegisterStore(reg, st)
			sm.now = func() time.Time { return time.Unix(1772366430, 0) }
			if st.observe == nil {
				t.Fatal("SetFlushObserver not called")
			}
			for _, d := range tc.flushes {
				st.observe(d)
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(tc.want), names...); err != nil {
				t.Error(err)
			}
			h := gatherFamily(t, reg, "ntpexp_store_flush_duration_seconds").GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != uint64(len(tc.flushes)) {
				t.Errorf("flush count %d, want %d", h.GetSampleCount(), len(tc.flushes))
			}
		})
	}
}

func TestObserveFlushAllocs(t *testing.T) {
	sm := RegisterStore(prometheus.NewRegistry(), &fakeStore{})
	sm.ObserveFlush(time.Millisecond)
	if a := testing.AllocsPerRun(100, func() { sm.ObserveFlush(time.Millisecond) }); a != 0 {
		t.Errorf("ObserveFlush: %v allocs", a)
	}
}
