package sweep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ErrAlreadyStarted is returned by Start while the Sweeper's goroutine runs.
var ErrAlreadyStarted = errors.New("sweeper already started")

// BatchFunc deletes at most limit expired rows in one statement and returns
// how many it deleted.
type BatchFunc func(ctx context.Context, limit int) (int64, error)

// Config describes one Sweeper. Every field is required.
type Config struct {
	// Name prefixes log messages and errors, e.g. "inbox".
	Name string
	// Interval is the pause between two sweeps of Run and Start.
	Interval time.Duration
	// BatchSize is the most rows one BatchFunc call deletes.
	BatchSize int
	// Logger receives sweep failures (warn) and results (debug).
	Logger *slog.Logger
	// BatchFunc runs one batch statement.
	BatchFunc BatchFunc
	// LogAttrs are added to every log line, e.g. the consumer.
	LogAttrs []any
}

// Sweeper deletes expired rows. It is safe for concurrent use.
type Sweeper struct {
	cfg Config

	mu   sync.Mutex
	stop context.CancelFunc
	done chan struct{}
}

// New returns a Sweeper; cfg must be complete (callers validate their own
// configuration and pass defaults).
func New(cfg Config) *Sweeper { return &Sweeper{cfg: cfg} }

// Sweep runs batches until one deletes fewer rows than the batch size. It
// returns the number of rows deleted, also when it fails part way.
func (s *Sweeper) Sweep(ctx context.Context) (deleted int64, err error) {
	for {
		n, err := s.Batch(ctx)
		deleted += n
		if err != nil {
			return deleted, err
		}
		if n < int64(s.cfg.BatchSize) {
			return deleted, nil
		}
	}
}

// Batch runs one batch statement.
func (s *Sweeper) Batch(ctx context.Context) (int64, error) {
	n, err := s.cfg.BatchFunc(ctx, s.cfg.BatchSize)
	if err != nil {
		return n, fmt.Errorf("%s: sweep: %w", s.cfg.Name, err)
	}
	return n, nil
}

// Run sweeps at once and then every Interval until ctx is done, and returns
// nil then.
func (s *Sweeper) Run(ctx context.Context) error {
	ticker := time.NewTicker(s.cfg.Interval)
	defer ticker.Stop()
	for {
		n, err := s.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.cfg.Logger.Warn(s.cfg.Name+": sweep failed", append([]any{"deleted", n, "err", err}, s.cfg.LogAttrs...)...)
		case n > 0:
			s.cfg.Logger.Debug(s.cfg.Name+": swept expired rows", append([]any{"deleted", n}, s.cfg.LogAttrs...)...)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// Start runs Run in a goroutine the Sweeper owns, until ctx is done or Stop
// is called. It fails with ErrAlreadyStarted if that goroutine still runs.
func (s *Sweeper) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		select {
		case <-s.done:
			// Ended with its context; Stop was not called. Start afresh.
			s.stop()
		default:
			return ErrAlreadyStarted
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s.stop, s.done = cancel, done
	go func() {
		defer close(done)
		_ = s.Run(ctx) // Run returns only nil.
	}()
	return nil
}

// Stop ends the goroutine Start began and waits for it; a sweep in progress
// is interrupted. It is safe to call more than once, and without Start.
func (s *Sweeper) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		return
	}
	s.stop()
	<-s.done
	s.stop, s.done = nil, nil
}

// The defaults and limits every dtx sweeper shares (inbox, idempotency keys,
// log retention), so their settings read and validate alike.
const (
	DefaultInterval  = time.Minute
	MinInterval      = time.Second
	MaxInterval      = 24 * time.Hour
	DefaultBatchSize = 1000
	MaxBatchSize     = 100_000
)

// SetDefaults fills a zero interval or batch size with the defaults.
func SetDefaults(interval *time.Duration, batchSize *int) {
	if *interval == 0 {
		*interval = DefaultInterval
	}
	if *batchSize == 0 {
		*batchSize = DefaultBatchSize
	}
}

// Validate checks interval and batchSize against the limits; its errors
// start with prefix and name the caller's fields.
func Validate(prefix, intervalField, batchField string, interval time.Duration, batchSize int) []error {
	var errs []error
	if interval < MinInterval || interval > MaxInterval {
		errs = append(errs, fmt.Errorf("%s%s: %s is outside %s..%s", prefix, intervalField, interval, MinInterval, MaxInterval))
	}
	if batchSize < 1 || batchSize > MaxBatchSize {
		errs = append(errs, fmt.Errorf("%s%s: %d is outside 1..%d", prefix, batchField, batchSize, MaxBatchSize))
	}
	return errs
}
