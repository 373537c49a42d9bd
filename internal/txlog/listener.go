package txlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/internal/wait"
)

// Defaults and limits of ListenerConfig.
const (
	// DefaultPollInterval is the longest Subscription.Wait waits without a
	// notification when ListenerConfig.PollInterval is zero.
	DefaultPollInterval = time.Second
	// DefaultBlockedPollInterval is the wait for rows held behind the
	// horizon when ListenerConfig.BlockedPollInterval is zero.
	DefaultBlockedPollInterval = 200 * time.Millisecond
	// DefaultMinReconnectDelay is the first pause before reconnecting when
	// ListenerConfig.MinReconnectDelay is zero.
	DefaultMinReconnectDelay = 100 * time.Millisecond
	// DefaultMaxReconnectDelay is the longest pause before reconnecting when
	// ListenerConfig.MaxReconnectDelay is zero.
	DefaultMaxReconnectDelay = 10 * time.Second
	// MinInterval is the shortest interval or delay a ListenerConfig accepts.
	MinInterval = time.Millisecond
	// MaxInterval is the longest interval or delay a ListenerConfig accepts.
	MaxInterval = time.Hour
)

// closeTimeout bounds closing the listening connection, which runs even when
// the Listener's context is done.
const closeTimeout = 5 * time.Second

// ErrAlreadyStarted is returned by Start while the goroutine of an earlier
// Start still runs.
var ErrAlreadyStarted = errors.New("txlog: already started")

// ListenerConfig configures a Listener.
type ListenerConfig struct {
	// Channel is the notification channel writers notify (with Notify or the
	// txlog_notify trigger function) when they append to the log. Required;
	// lower-case letters, digits, '_' and '.' (e.g. "dtx.outbox"), at most 63
	// bytes.
	Channel string

	// PollInterval is the longest Subscription.Wait waits when no
	// notification comes: the fallback that bounds latency when
	// notifications are lost (the connection is down) or never sent.
	// Defaults to DefaultPollInterval (1s); between MinInterval and
	// MaxInterval.
	PollInterval time.Duration

	// BlockedPollInterval is the longest Subscription.Wait waits when the
	// last read left rows behind the horizon (Batch.HorizonBlocked): the end
	// of the transaction that holds them back sends no notification.
	// Defaults to DefaultBlockedPollInterval (200ms); between MinInterval and
	// PollInterval.
	BlockedPollInterval time.Duration

	// MinReconnectDelay is the pause before the first attempt to reconnect
	// after the listening connection failed; it doubles after each failed
	// attempt, up to MaxReconnectDelay, with up to 20% random jitter.
	// Defaults to DefaultMinReconnectDelay (100ms); between MinInterval and
	// MaxReconnectDelay.
	MinReconnectDelay time.Duration

	// MaxReconnectDelay is the longest pause between reconnect attempts.
	// Defaults to DefaultMaxReconnectDelay (10s); between MinInterval and
	// MaxInterval.
	MaxReconnectDelay time.Duration

	// Logger receives connection losses (warn) and reconnections (info).
	// Defaults to no logging.
	Logger *slog.Logger
}

func (c *ListenerConfig) setDefaults() {
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.BlockedPollInterval == 0 {
		c.BlockedPollInterval = min(DefaultBlockedPollInterval, c.PollInterval)
	}
	if c.MaxReconnectDelay == 0 {
		c.MaxReconnectDelay = DefaultMaxReconnectDelay
	}
	if c.MinReconnectDelay == 0 {
		c.MinReconnectDelay = min(DefaultMinReconnectDelay, c.MaxReconnectDelay)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *ListenerConfig) validate() error {
	var errs []error
	if err := validateChannel(c.Channel); err != nil {
		errs = append(errs, fmt.Errorf("txlog: Channel: %w", err))
	}
	between := func(field string, d, lo, hi time.Duration) {
		if d < lo || d > hi {
			errs = append(errs, fmt.Errorf("txlog: %s: %s is outside %s..%s", field, d, lo, hi))
		}
	}
	between("PollInterval", c.PollInterval, MinInterval, MaxInterval)
	between("BlockedPollInterval", c.BlockedPollInterval, MinInterval, max(c.PollInterval, MinInterval))
	between("MaxReconnectDelay", c.MaxReconnectDelay, MinInterval, MaxInterval)
	between("MinReconnectDelay", c.MinReconnectDelay, MinInterval, max(c.MaxReconnectDelay, MinInterval))
	return errors.Join(errs...)
}

// Listener keeps one PostgreSQL connection listening on a channel and wakes
// its Subscriptions when a notification arrives. It reconnects with backoff
// when the connection drops; meanwhile, and always, Subscription.Wait falls
// back to polling, so a lost connection or a lost notification delays
// readers by at most the poll interval and never stops them.
//
// The connection is taken from the pool and then owned by the Listener
// (pgxpool.Conn.Hijack), because a LISTEN binds a session: it does not count
// against the pool afterwards. A Listener is safe for concurrent use.
type Listener struct {
	pool *pgxpool.Pool
	cfg  ListenerConfig

	connected atomic.Bool

	subMu sync.Mutex
	subs  map[*Subscription]struct{}

	mu     sync.Mutex
	runCtx context.Context // of the goroutine Start began
	stop   context.CancelFunc
	done   chan struct{}
}

// NewListener returns a Listener that will listen on cfg.Channel with
// connections of pool once started. It checks cfg and fails with an error
// naming every invalid field; it does not touch the database.
func NewListener(pool *pgxpool.Pool, cfg ListenerConfig) (*Listener, error) {
	if pool == nil {
		return nil, errors.New("txlog: listener: pool is nil")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Listener{pool: pool, cfg: cfg, subs: map[*Subscription]struct{}{}}, nil
}

// Connected reports whether the Listener is listening now. While it is not,
// subscriptions wake only by polling.
func (l *Listener) Connected() bool { return l.connected.Load() }

// Run listens until ctx is done and returns nil then. It connects, runs
// LISTEN, wakes every subscription (notifications may have been missed while
// it was not listening) and wakes them again on each notification. When the
// connection fails it logs, waits (MinReconnectDelay, doubling up to
// MaxReconnectDelay) and connects again, for as long as ctx lasts.
func (l *Listener) Run(ctx context.Context) error {
	backoff := wait.Doubling{Min: l.cfg.MinReconnectDelay, Max: l.cfg.MaxReconnectDelay}
	for {
		listened, err := l.listen(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			backoff.Reset()
		}
		delay := backoff.Next()
		l.cfg.Logger.Warn("txlog: listening connection failed; polling until it is back",
			"channel", l.cfg.Channel, "retry_in", delay, "err", err)
		// Jittered, so replicas that lost the server together do not
		// reconnect in lockstep.
		if !wait.Sleep(ctx, wait.Jitter(delay)) {
			return nil
		}
	}
}

// listen runs one connection: connect, LISTEN, wait for notifications until
// an error. listened reports whether LISTEN succeeded.
func (l *Listener) listen(ctx context.Context) (listened bool, err error) {
	pc, err := l.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("acquire a connection: %w", err)
	}
	conn := pc.Hijack()
	defer func() {
		l.connected.Store(false)
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = conn.Close(closeCtx) // The connection is being dropped; nothing to do on failure.
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.cfg.Channel}.Sanitize()); err != nil {
		return false, fmt.Errorf("listen on %q: %w", l.cfg.Channel, err)
	}
	// Wake first, so that whoever sees Connected finds the wake-up pending.
	l.wakeAll()
	l.connected.Store(true)
	l.cfg.Logger.Info("txlog: listening", "channel", l.cfg.Channel, "pid", conn.PgConn().PID())
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, fmt.Errorf("wait for a notification on %q: %w", l.cfg.Channel, err)
		}
		if n.Channel == l.cfg.Channel {
			l.wakeAll()
		}
	}
}

// wakeAll marks a wake-up pending in every subscription.
func (l *Listener) wakeAll() {
	l.subMu.Lock()
	defer l.subMu.Unlock()
	for s := range l.subs {
		select {
		case s.wake <- struct{}{}:
		default: // A wake-up is pending already.
		}
	}
}

// Start runs Run in a goroutine the Listener owns, until ctx is done or Stop
// is called. It fails with ErrAlreadyStarted if the goroutine of an earlier
// Start still runs; if that one's context is done, Start waits for it to end
// and starts afresh.
func (l *Listener) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done != nil {
		if l.runCtx.Err() == nil {
			return ErrAlreadyStarted
		}
		<-l.done // Ending with its context; Stop was not called.
		l.stop()
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	l.runCtx, l.stop, l.done = ctx, cancel, done
	go func() {
		defer close(done)
		_ = l.Run(ctx) // Run returns only nil.
	}()
	return nil
}

// Stop ends the goroutine Start began, closing the listening connection, and
// waits for it. It is safe to call more than once, and without Start.
// Subscriptions stay usable: they wake by polling only.
func (l *Listener) Stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done == nil {
		return
	}
	l.stop()
	<-l.done
	l.runCtx, l.stop, l.done = nil, nil, nil
}

// Subscribe returns a new Subscription to the Listener's notifications. A
// notification that arrives at any time after Subscribe, while the caller is
// reading rather than waiting, is kept for its next Wait: none is missed
// between a read and a wait.
func (l *Listener) Subscribe() *Subscription {
	s := &Subscription{l: l, wake: make(chan struct{}, 1)}
	l.subMu.Lock()
	defer l.subMu.Unlock()
	l.subs[s] = struct{}{}
	return s
}

// Wake says why Subscription.Wait returned.
type Wake int

const (
	// WakePolled means the poll interval passed without a notification.
	WakePolled Wake = iota + 1
	// WakeNotified means a notification arrived, or the Listener
	// (re)connected and notifications may have been missed before.
	WakeNotified
)

// String returns "polled" or "notified".
func (w Wake) String() string {
	switch w {
	case WakePolled:
		return "polled"
	case WakeNotified:
		return "notified"
	}
	return fmt.Sprintf("Wake(%d)", int(w))
}

// Subscription wakes one reader loop. Its Wait is meant for one goroutine at
// a time; give each reader loop its own Subscription.
type Subscription struct {
	l    *Listener
	wake chan struct{}
	// echo: the last Wait returned on a notification, so the next one
	// waits at most EchoInterval.
	echo bool
}

// EchoInterval is the longest Wait waits after a Wait that returned on a
// notification. A writer that commits while another is notifying the same
// channel does not notify (migration 010: PostgreSQL serialises the commits
// of notifying transactions, so dtx lets one at a time notify); this read
// shortly after every wake-up picks up what such writers committed.
const EchoInterval = 10 * time.Millisecond

// Wait blocks until new rows may be readable: a notification arrived since
// the previous Wait returned (or since Subscribe), or the poll interval
// passed (BlockedPollInterval when blocked is true, PollInterval otherwise),
// or ctx is done, which returns ctx's error. Pass the HorizonBlocked of the
// last read as blocked. After a Wait that returned on a notification, the
// next one waits at most EchoInterval (see there).
//
// A notification is delivered when the writing transaction commits, but its
// rows may still be held behind the horizon by an older transaction: after a
// wake-up, read; the read says whether to wait again, and how.
func (s *Subscription) Wait(ctx context.Context, blocked bool) (Wake, error) {
	interval := s.l.cfg.PollInterval
	if blocked {
		interval = s.l.cfg.BlockedPollInterval
	}
	if s.echo {
		interval = min(interval, EchoInterval)
		s.echo = false
	}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.wake:
		s.echo = true
		return WakeNotified, nil
	case <-timer.C:
		return WakePolled, nil
	}
}

// Close ends the subscription: the Listener stops marking wake-ups for it.
// Wait still returns by polling. It is safe to call more than once.
func (s *Subscription) Close() {
	s.l.subMu.Lock()
	defer s.l.subMu.Unlock()
	delete(s.l.subs, s)
}

// Notify wakes the listeners of channel: writers call it in the transaction
// that appends to a log (or attach the txlog_notify trigger function to the
// table instead). PostgreSQL delivers the notification when the transaction
// commits, once per channel however often it was called, and drops it if the
// transaction rolls back. Called outside a transaction, it notifies at once.
func Notify(ctx context.Context, q Querier, channel string) error {
	if err := validateChannel(channel); err != nil {
		return fmt.Errorf("txlog: notify: channel: %w", err)
	}
	b, err := sqlFiles.ReadFile("sql/notify.sql")
	if err != nil {
		return fmt.Errorf("txlog: embedded query notify.sql: %w", err)
	}
	if _, err := q.Exec(ctx, string(b), channel); err != nil {
		return fmt.Errorf("txlog: notify %q: %w", channel, err)
	}
	return nil
}
