package sqlitestore

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults applied by Config.withDefaults to zero fields.
const (
	DefaultBatchSize = 100
	// MaxBatchSize bounds database.batch_size.
	MaxBatchSize               = 100000
	DefaultFlushInterval       = 30 * time.Second
	DefaultQueueSize           = 65536
	DefaultRetentionDays       = 30
	DefaultRollupRetentionDays = 400
	DefaultCleanupInterval     = time.Hour

	// defaultCleanupChunk is how many raw rows one retention transaction
	// deletes before the writer goes back to pending batches.
	defaultCleanupChunk = 5000
)

// FlushObserver is told about every committed batch (the exporter turns
// it into a histogram). It is called from the writer goroutine and must
// not block.
type FlushObserver interface {
	ObserveFlush(d time.Duration, rows int)
}

// Config configures a Store. Zero numeric fields take the defaults above.
// The keys named in validation errors are those of the configuration file
// (database.*).
type Config struct {
	// Path is the database file. It is created 0600 if absent; its
	// directory must exist and be writable (WAL and shared-memory files
	// live beside it).
	Path string
	// BatchSize is the queue length that triggers a write. The writer
	// then commits all whole batches queued in one transaction, up to
	// 65536 rows (or BatchSize if larger; at most QueueSize), so that a
	// writer that fell behind catches up with larger, cheaper
	// transactions. Transactions start at most every 250 ms unless the
	// queue is half full. Rows below a whole batch wait for FlushInterval.
	BatchSize int
	// FlushInterval is the longest an accepted observation waits in the
	// queue before it is written.
	FlushInterval time.Duration
	// QueueSize bounds the in-memory queue between Observe and the writer.
	// When it is full Observe drops and counts (see RowsDropped).
	QueueSize int
	// RetentionDays is how long raw observations are kept.
	RetentionDays int
	// RollupRetentionDays is how long hourly rollups (client_hours) and
	// client summaries of clients not seen since are kept. Must be
	// >= RetentionDays.
	RollupRetentionDays int
	// CleanupInterval is how often retention and maintenance run.
	CleanupInterval time.Duration
	// AddressMode says how client addresses are stored: "full" (default),
	// "truncate" (IPv4 /24, IPv6 /48) or "hash" (keyed, see AnonymizeAddr).
	AddressMode AddressMode
	// AddressKey is the HMAC key for AddressMode "hash" (required then).
	AddressKey string
	// FlushObserver, if set, is told about every committed batch.
	FlushObserver FlushObserver
	// Now returns the current time (time.Now when nil). Retention uses it.
	Now func() time.Time

	// Test hooks.
	beforeCommit    func() error // fails a transaction after all its writes
	maxTxRows       int
	txGap           time.Duration // between transaction starts; negative: none
	paceDuty        float64       // see pacer; 0: default, negative: no pacing
	paceSleep       func(time.Duration)
	rollupCacheRows int
	cleanupChunk    int
	retryMin        time.Duration
	retryMax        time.Duration
	firstCleanup    time.Duration
	dropLogPeriod   time.Duration
}

func (c Config) withDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.RetentionDays == 0 {
		c.RetentionDays = DefaultRetentionDays
	}
	if c.RollupRetentionDays == 0 {
		c.RollupRetentionDays = DefaultRollupRetentionDays
	}
	if c.CleanupInterval == 0 {
		c.CleanupInterval = DefaultCleanupInterval
	}
	if c.AddressMode == "" {
		c.AddressMode = AddressFull
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.maxTxRows == 0 {
		c.maxTxRows = defaultMaxTxRows
	}
	if c.txGap == 0 {
		c.txGap = defaultTxGap
	}
	if c.rollupCacheRows == 0 {
		c.rollupCacheRows = defaultRollupCacheRows
	}
	if c.cleanupChunk == 0 {
		c.cleanupChunk = defaultCleanupChunk
	}
	if c.retryMin == 0 {
		c.retryMin = 50 * time.Millisecond
	}
	if c.retryMax == 0 {
		// Short enough that writing resumes promptly once disk space returns.
		c.retryMax = 5 * time.Second
	}
	if c.firstCleanup == 0 {
		c.firstCleanup = time.Minute
		if c.CleanupInterval < c.firstCleanup {
			c.firstCleanup = c.CleanupInterval
		}
	}
	if c.dropLogPeriod == 0 {
		c.dropLogPeriod = 10 * time.Second
	}
	return c
}

// Validate reports the first invalid setting, naming its configuration key.
// It validates the configuration as Open would use it, after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	switch p := strings.TrimSpace(c.Path); {
	case p == "":
		errs = append(errs, errors.New("database.path must be set"))
	case p == ":memory:" || strings.HasPrefix(p, "file:") || strings.Contains(p, "mode=memory"):
		errs = append(errs, fmt.Errorf("database.path must be a plain file path, not %q", c.Path))
	}
	if c.BatchSize < 0 {
		errs = append(errs, errors.New("database.batch_size must be > 0"))
	}
	if c.BatchSize > MaxBatchSize {
		errs = append(errs, fmt.Errorf("database.batch_size must be <= %d", MaxBatchSize))
	}
	if c.FlushInterval < 0 {
		errs = append(errs, errors.New("database.flush_interval must be > 0"))
	}
	if c.QueueSize < 0 {
		errs = append(errs, errors.New("database.queue_size must be > 0"))
	}
	if c.QueueSize > 0 && c.BatchSize > 0 && c.QueueSize < c.BatchSize {
		errs = append(errs, fmt.Errorf("database.queue_size (%d) must be >= database.batch_size (%d)", c.QueueSize, c.BatchSize))
	}
	if c.QueueSize > 1<<24 {
		errs = append(errs, errors.New("database.queue_size must be <= 16777216"))
	}
	if c.RetentionDays < 0 {
		errs = append(errs, errors.New("database.retention_days must be > 0"))
	}
	if c.RollupRetentionDays < 0 {
		errs = append(errs, errors.New("database.rollup_retention_days must be > 0"))
	}
	if c.RetentionDays > 0 && c.RollupRetentionDays > 0 && c.RollupRetentionDays < c.RetentionDays {
		errs = append(errs, fmt.Errorf("database.rollup_retention_days (%d) must be >= database.retention_days (%d)", c.RollupRetentionDays, c.RetentionDays))
	}
	if c.CleanupInterval < 0 {
		errs = append(errs, errors.New("database.cleanup_interval must be > 0"))
	}
	switch c.AddressMode {
	case AddressFull, AddressTruncate:
	case AddressHash:
		if len(c.AddressKey) < 16 {
			errs = append(errs, errors.New("database.address_key must be at least 16 bytes when database.address_mode is hash"))
		}
	default:
		errs = append(errs, fmt.Errorf("database.address_mode must be full, truncate or hash, not %q", c.AddressMode))
	}
	return errors.Join(errs...)
}
