package txlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults and limits of HorizonConfig.
const (
	// DefaultHorizonInterval is HorizonConfig.Interval when zero.
	DefaultHorizonInterval = time.Second
	// DefaultHorizonWarnAfter is HorizonConfig.WarnAfter when zero.
	DefaultHorizonWarnAfter = 10 * time.Second
	// DefaultHorizonWarnEvery is HorizonConfig.WarnEvery when zero.
	DefaultHorizonWarnEvery = 30 * time.Second
	// DefaultHorizonNotReadyAfter is HorizonConfig.NotReadyAfter when zero.
	DefaultHorizonNotReadyAfter = time.Minute
)

// HorizonCheck is the name under which binaries put HorizonWatch.Check on
// /readyz.
const HorizonCheck = "horizon"

// HorizonRunbook is the repository-relative path, with its anchor, of the
// runbook section the horizon's warnings and readiness errors point to:
// what to look at and what to do when a transaction holds the horizon.
const HorizonRunbook = "docs/runbook.md#the-relay-or-projector-stopped-and-a-transaction-holds-the-horizon"

// HorizonWarnMsg is the message of the warning a HorizonWatch logs while a
// transaction holds rows of a log back.
const HorizonWarnMsg = "txlog: a transaction holds the horizon; rows of the log wait until it ends"

// horizonHint ends warnings and readiness errors: what to do.
const horizonHint = "end that transaction (SELECT pg_terminate_backend(pid)) or set idle_in_transaction_session_timeout; see " + HorizonRunbook

// horizonQueryTimeout bounds each query of a probe.
const horizonQueryTimeout = 5 * time.Second

// HorizonLog names a log a HorizonWatch watches.
type HorizonLog struct {
	// Schema is the schema of the log table. Defaults to DefaultSchema
	// ("dtx"); must pass migrate.ValidateSchemaName.
	Schema string

	// Log is the log table's name, without schema. Required; a plain
	// lower-case identifier.
	Log string
}

// HorizonConfig configures a HorizonWatch.
type HorizonConfig struct {
	// Logs are the logs whose readers the watch speaks for. Required: at
	// least one, none twice.
	Logs []HorizonLog

	// Interval is how often the watch looks at the horizon. Defaults to
	// DefaultHorizonInterval (1s); between 10ms and 1 minute. Each look is
	// one statement (an index probe per log), plus a look-up in
	// pg_stat_activity while rows wait.
	Interval time.Duration

	// WarnAfter is how long rows of a log wait behind the same horizon
	// before the watch logs HorizonWarnMsg. Defaults to
	// DefaultHorizonWarnAfter (10s); between 1ms and 1 hour.
	WarnAfter time.Duration

	// WarnEvery is the least time between two warnings about one log.
	// Defaults to DefaultHorizonWarnEvery (30s); between 1s and 1 hour.
	WarnEvery time.Duration

	// NotReadyAfter is how long rows of a log may wait behind the same
	// horizon before Check fails (the process is not ready). Defaults to
	// DefaultHorizonNotReadyAfter (1m); at most 24 hours; a negative value
	// means never: Check then always succeeds, and the gauge and the
	// warning remain.
	NotReadyAfter time.Duration

	// Logger receives the warnings, the all-clear (info) and failed looks
	// (warn, at most one per WarnEvery). Defaults to no logging.
	Logger *slog.Logger

	// NowFunc is the clock. Defaults to time.Now.
	NowFunc func() time.Time
}

func (c *HorizonConfig) setDefaults() {
	for i := range c.Logs {
		if c.Logs[i].Schema == "" {
			c.Logs[i].Schema = DefaultSchema
		}
	}
	if c.Interval == 0 {
		c.Interval = DefaultHorizonInterval
	}
	if c.WarnAfter == 0 {
		c.WarnAfter = DefaultHorizonWarnAfter
	}
	if c.WarnEvery == 0 {
		c.WarnEvery = DefaultHorizonWarnEvery
	}
	if c.NotReadyAfter == 0 {
		c.NotReadyAfter = DefaultHorizonNotReadyAfter
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.NowFunc == nil {
		c.NowFunc = time.Now
	}
}

func (c *HorizonConfig) validate() error {
	var errs []error
	if len(c.Logs) == 0 {
		errs = append(errs, errors.New("txlog: horizon: Logs: no log to watch"))
	}
	for i, l := range c.Logs {
		errs = append(errs, validateTable(fmt.Sprintf("txlog: horizon: Logs[%d].", i), l.Schema, l.Log)...)
		if slices.Index(c.Logs, l) < i {
			errs = append(errs, fmt.Errorf("txlog: horizon: Logs[%d]: %s.%s is listed twice", i, l.Schema, l.Log))
		}
	}
	between := func(field string, d, lo, hi time.Duration) {
		if d < lo || d > hi {
			errs = append(errs, fmt.Errorf("txlog: horizon: %s: %s is outside %s..%s", field, d, lo, hi))
		}
	}
	between("Interval", c.Interval, 10*time.Millisecond, time.Minute)
	between("WarnAfter", c.WarnAfter, time.Millisecond, time.Hour)
	between("WarnEvery", c.WarnEvery, time.Second, time.Hour)
	if c.NotReadyAfter > 24*time.Hour {
		errs = append(errs, fmt.Errorf("txlog: horizon: NotReadyAfter: %s is more than 24h0m0s (a negative value means never)", c.NotReadyAfter))
	}
	return errors.Join(errs...)
}

// Blocker is the transaction at the horizon, as PostgreSQL shows it to a
// role without special privileges.
type Blocker struct {
	// PID is the process id of the session running it; 0 for a prepared
	// transaction, which has no session.
	PID int
	// Database is the database it runs in.
	Database string
	// Role is the role that runs it (for a prepared transaction, its owner).
	Role string
	// Application is the session's application_name, often empty.
	Application string
	// PreparedGID is the global id of a prepared (two-phase) transaction;
	// empty for a session's transaction.
	PreparedGID string
}

// String describes b for logs and errors, e.g.
// `pid 4242, database "billing", role "report"`.
func (b Blocker) String() string {
	var s strings.Builder
	if b.PreparedGID != "" {
		fmt.Fprintf(&s, "prepared transaction %q", b.PreparedGID)
	} else {
		fmt.Fprintf(&s, "pid %d", b.PID)
	}
	fmt.Fprintf(&s, ", database %q, role %q", b.Database, b.Role)
	if b.Application != "" {
		fmt.Fprintf(&s, ", application %q", b.Application)
	}
	return s.String()
}

// LogHorizon is what a HorizonWatch saw of one log.
type LogHorizon struct {
	// Schema and Log name the log.
	Schema, Log string
	// Waiting reports that committed rows of the log wait behind the
	// horizon: no reader can read them until the transaction at the horizon
	// ends.
	Waiting bool
	// HeldFor is how long the horizon has stayed where it is, as observed
	// by the watch, when rows wait; 0 when none wait.
	HeldFor time.Duration
}

// HorizonStatus is what a HorizonWatch saw at its last successful look.
type HorizonStatus struct {
	// ObservedAt is when; zero before the first successful look.
	ObservedAt time.Time
	// Xmin is the horizon: the xmin of the look's snapshot, the id of the
	// oldest transaction still running in the cluster, or the next
	// transaction id when none runs.
	Xmin uint64
	// Since is when the watch first saw the horizon at Xmin.
	Since time.Time
	// Blocker is the transaction at Xmin, looked up while rows wait (a
	// committed row at or past Xmin means that a transaction still runs
	// there); nil when no row waits or the look-up found nothing (it ended
	// meanwhile).
	Blocker *Blocker
	// Logs holds one entry per watched log, in HorizonConfig.Logs order.
	Logs []LogHorizon
}

// HeldFor returns the longest LogHorizon.HeldFor: how long rows of a
// watched log have waited behind the same horizon; 0 when none wait.
func (s HorizonStatus) HeldFor() time.Duration {
	var d time.Duration
	for _, l := range s.Logs {
		d = max(d, l.HeldFor)
	}
	return d
}

// HorizonWatch looks at the cluster's horizon every Interval and reports
// when a transaction holds rows of the watched logs back: every log reader
// reads only rows below the horizon (see Reader.ReadBatch), so one
// transaction with a transaction id, open anywhere in the cluster (any
// database, any role), stops all of them until it ends. dtx never reads past
// it: skipping would lose the rows that transaction may still commit.
//
// What it measures works for a role without special privileges: the
// horizon is the xmin of its own snapshot; the transaction there is found by
// its id in pg_stat_activity.backend_xid (or pg_prepared_xacts), which every
// role sees, with the session's pid, database, role and application_name.
//
// It is a prometheus.Collector of one gauge:
//
//   - dtx_txlog_horizon_held_seconds{schema, log}: while committed rows of
//     the log wait behind the horizon, how long the horizon has stayed at
//     the same transaction id, as observed by this watch (a lower bound: it
//     counts from the first look that saw that horizon, at the earliest
//     when the watch started, in steps of Interval); 0 while no row waits,
//     however old the oldest transaction is. It is the value of the last
//     successful look.
//
// While rows wait WarnAfter or longer, it logs HorizonWarnMsg (at most once
// per WarnEvery and log) naming the blocking pid, database, role and how
// long, with a hint; when they are readable again it logs an info. Check
// fails once they have waited NotReadyAfter. Create it with
// NewHorizonWatch, run it with Run or Start; it is safe for concurrent use.
type HorizonWatch struct {
	db  Querier
	cfg HorizonConfig

	probeQuery, blockerQuery string
	held                     *prometheus.Desc

	mu       sync.Mutex
	tr       horizonTracker
	status   HorizonStatus
	lastFail time.Time

	runMu  sync.Mutex
	runCtx context.Context
	stop   context.CancelFunc
	done   chan struct{}
}

// NewHorizonWatch returns a HorizonWatch running its queries on db
// (typically a *pgxpool.Pool). It checks cfg and fails with an error naming
// every invalid field; it does not touch the database.
func NewHorizonWatch(db Querier, cfg HorizonConfig) (*HorizonWatch, error) {
	if db == nil {
		return nil, errors.New("txlog: horizon: db is nil")
	}
	cfg.Logs = slices.Clone(cfg.Logs)
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var errs []error
	waiting := make([]string, 0, len(cfg.Logs))
	for _, l := range cfg.Logs {
		q, err := loadQuery("horizon_waiting.sql", l.Schema, l.Log, nil)
		errs = append(errs, err)
		waiting = append(waiting, stripComments(q))
	}
	probe, err := loadQuery("horizon.sql", DefaultSchema, "unused", nil, "{{.waiting}}", strings.Join(waiting, ",\n"))
	errs = append(errs, err)
	blocker, err := loadQuery("horizon_blocker.sql", DefaultSchema, "unused", nil)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &HorizonWatch{
		db: db, cfg: cfg, probeQuery: probe, blockerQuery: blocker,
		held: prometheus.NewDesc("dtx_txlog_horizon_held_seconds",
			"While committed rows of the log wait behind the horizon, how long the horizon has stayed at the same open transaction; 0 while none wait.",
			[]string{"schema", "log"}, nil),
		tr: newHorizonTracker(cfg),
	}, nil
}

// WatchHorizon is how a binary watches the horizon of its logs in one
// call: it creates a HorizonWatch of cfg running its queries on db,
// registers its gauge on reg (when not nil), puts its Check under
// HorizonCheck with addCheck (when not nil; a service's AddReadyCheck), and
// starts it until ctx is done. The caller calls Stop on the result before
// it returns.
func WatchHorizon(ctx context.Context, db Querier, reg prometheus.Registerer,
	addCheck func(name string, fn func(context.Context) error), cfg HorizonConfig,
) (*HorizonWatch, error) {
	w, err := NewHorizonWatch(db, cfg)
	if err != nil {
		return nil, err
	}
	if reg != nil {
		if err := reg.Register(w); err != nil {
			return nil, fmt.Errorf("txlog: horizon: register the gauge: %w", err)
		}
	}
	if addCheck != nil {
		addCheck(HorizonCheck, w.Check)
	}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// stripComments drops the "--" comment lines of an embedded query, for one
// spliced into another.
func stripComments(q string) string {
	var lines []string
	for l := range strings.SplitSeq(q, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			lines = append(lines, l)
		}
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// Run looks at the horizon at once and then every Interval until ctx is
// done, and returns nil then. A failed look is logged (at most once per
// WarnEvery) and leaves the last status as it was.
func (w *HorizonWatch) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		if err := w.Probe(ctx); err != nil && ctx.Err() == nil {
			w.mu.Lock()
			now := w.cfg.NowFunc()
			report := w.lastFail.IsZero() || now.Sub(w.lastFail) >= w.cfg.WarnEvery
			if report {
				w.lastFail = now
			}
			w.mu.Unlock()
			if report {
				w.cfg.Logger.WarnContext(ctx, "txlog: horizon: look failed; retrying", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Start runs Run in a goroutine the watch owns, until ctx is done or Stop
// is called. It fails with ErrAlreadyStarted while an earlier Start's
// goroutine runs.
func (w *HorizonWatch) Start(ctx context.Context) error {
	w.runMu.Lock()
	defer w.runMu.Unlock()
	if w.done != nil {
		if w.runCtx.Err() == nil {
			return ErrAlreadyStarted
		}
		<-w.done
		w.stop()
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	w.runCtx, w.stop, w.done = ctx, cancel, done
	go func() {
		defer close(done)
		_ = w.Run(ctx) // Returns only nil.
	}()
	return nil
}

// Stop ends the goroutine Start began and waits for it. Safe to call twice,
// and without Start.
func (w *HorizonWatch) Stop() {
	w.runMu.Lock()
	defer w.runMu.Unlock()
	if w.done == nil {
		return
	}
	w.stop()
	<-w.done
	w.done = nil
}

// Probe looks at the horizon once: it updates the status, the gauge, and
// logs what is due. Run calls it every Interval; call it directly only
// without Run.
func (w *HorizonWatch) Probe(ctx context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, horizonQueryTimeout)
	defer cancel()
	var xmin uint64
	var waiting []bool
	if err := w.db.QueryRow(qctx, w.probeQuery).Scan(&xmin, &waiting); err != nil {
		return fmt.Errorf("txlog: horizon: %w", err)
	}
	if len(waiting) != len(w.cfg.Logs) {
		return fmt.Errorf("txlog: horizon: %d answers for %d logs", len(waiting), len(w.cfg.Logs))
	}
	w.mu.Lock()
	st, needBlocker := w.tr.observe(w.cfg.NowFunc(), xmin, waiting)
	w.mu.Unlock()

	if needBlocker {
		b, err := w.lookupBlocker(qctx, xmin)
		if err != nil {
			// The status goes on without a name; the next look tries again.
			w.cfg.Logger.DebugContext(ctx, "txlog: horizon: look up the blocking transaction", "err", err)
		}
		w.mu.Lock()
		w.tr.setBlocker(xmin, b)
		st.Blocker = w.tr.blocker
		w.mu.Unlock()
	}

	w.mu.Lock()
	warn, clear := w.tr.due(st)
	w.status = st
	w.mu.Unlock()
	for _, i := range warn {
		l := st.Logs[i]
		attrs := []any{"schema", l.Schema, "log", l.Log, "held_for", l.HeldFor.Round(time.Millisecond).String(),
			"xid", st.Xmin}
		if b := st.Blocker; b != nil {
			attrs = append(attrs, "pid", b.PID, "database", b.Database, "role", b.Role)
			if b.Application != "" {
				attrs = append(attrs, "application", b.Application)
			}
			if b.PreparedGID != "" {
				attrs = append(attrs, "prepared_gid", b.PreparedGID)
			}
		} else {
			attrs = append(attrs, "pid", "unknown: the transaction ended or is not visible")
		}
		attrs = append(attrs, "hint", horizonHint)
		w.cfg.Logger.WarnContext(ctx, HorizonWarnMsg, attrs...)
	}
	for _, c := range clear {
		w.cfg.Logger.InfoContext(ctx, "txlog: the horizon moved on; rows of the log are readable again",
			"schema", c.Schema, "log", c.Log, "held_for", c.HeldFor.Round(time.Millisecond).String())
	}
	return nil
}

// lookupBlocker finds the session or prepared transaction whose id is xmin;
// nil when none (it ended).
func (w *HorizonWatch) lookupBlocker(ctx context.Context, xmin uint64) (*Blocker, error) {
	var b Blocker
	// backend_xid is the 32-bit xid: the low half of the 64-bit id.
	err := w.db.QueryRow(ctx, w.blockerQuery, strconv.FormatUint(xmin&0xFFFF_FFFF, 10)).
		Scan(&b.PID, &b.Database, &b.Role, &b.Application, &b.PreparedGID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// Status returns what the watch saw at its last successful look.
func (w *HorizonWatch) Status() HorizonStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.status
	st.Logs = slices.Clone(st.Logs)
	if st.Blocker != nil {
		b := *st.Blocker
		st.Blocker = &b
	}
	return st
}

// Check is a readiness check (put it on /readyz under HorizonCheck): it
// fails once rows of a watched log have waited behind the same horizon for
// NotReadyAfter or longer, with an error that names the log, how long, the
// blocking transaction and what to do. It uses the last look and runs no
// query; before the first look, and with a negative NotReadyAfter, it
// succeeds.
func (w *HorizonWatch) Check(context.Context) error {
	if w.cfg.NotReadyAfter < 0 {
		return nil
	}
	st := w.Status()
	var held []string
	for _, l := range st.Logs {
		if l.Waiting && l.HeldFor >= w.cfg.NotReadyAfter {
			held = append(held, l.Schema+"."+l.Log)
		}
	}
	if len(held) == 0 {
		return nil
	}
	who := "a transaction that ended or is not visible"
	if st.Blocker != nil {
		who = st.Blocker.String()
	}
	return fmt.Errorf("rows of %s wait behind transaction %d (%s), which has held the horizon for %s (more than %s): %s",
		strings.Join(held, ", "), st.Xmin, who, st.HeldFor().Round(time.Second), w.cfg.NotReadyAfter, horizonHint)
}

// Describe implements prometheus.Collector.
func (w *HorizonWatch) Describe(ch chan<- *prometheus.Desc) { ch <- w.held }

// Collect implements prometheus.Collector: the gauge of every watched log,
// from the last successful look (0 before the first).
func (w *HorizonWatch) Collect(ch chan<- prometheus.Metric) {
	st := w.Status()
	for i, l := range w.cfg.Logs {
		var v float64
		if i < len(st.Logs) {
			v = st.Logs[i].HeldFor.Seconds()
		}
		ch <- prometheus.MustNewConstMetric(w.held, prometheus.GaugeValue, v, l.Schema, l.Log)
	}
}

// horizonTracker is the watch's memory, without I/O: which horizon it saw
// since when, which logs it warned about and when.
type horizonTracker struct {
	cfg HorizonConfig

	xmin    uint64
	since   time.Time
	blocker *Blocker // of xmin, once found

	lastWarn []time.Time // per log; kept across incidents (the rate limit)
	warned   []bool      // per log: a warning was logged for the current wait
	heldFor  []time.Duration
}

func newHorizonTracker(cfg HorizonConfig) horizonTracker {
	return horizonTracker{
		cfg:      cfg,
		lastWarn: make([]time.Time, len(cfg.Logs)),
		warned:   make([]bool, len(cfg.Logs)),
		heldFor:  make([]time.Duration, len(cfg.Logs)),
	}
}

// observe folds one look into the tracker and returns the status it gives
// (without Blocker) and whether the blocker should be looked up.
func (t *horizonTracker) observe(now time.Time, xmin uint64, waiting []bool) (HorizonStatus, bool) {
	if t.since.IsZero() || xmin != t.xmin {
		t.xmin, t.since, t.blocker = xmin, now, nil
	}
	st := HorizonStatus{ObservedAt: now, Xmin: xmin, Since: t.since,
		Blocker: t.blocker, Logs: make([]LogHorizon, len(t.cfg.Logs))}
	anyWaiting := false
	for i, l := range t.cfg.Logs {
		lh := LogHorizon{Schema: l.Schema, Log: l.Log, Waiting: waiting[i]}
		if lh.Waiting {
			lh.HeldFor = now.Sub(t.since)
			anyWaiting = true
		}
		st.Logs[i] = lh
	}
	return st, anyWaiting && t.blocker == nil
}

// setBlocker records the blocker found for xmin, unless the horizon moved.
func (t *horizonTracker) setBlocker(xmin uint64, b *Blocker) {
	if xmin == t.xmin {
		t.blocker = b
	}
}

// due returns the logs to warn about now, and the logs whose wait (warned
// about) ended, each with how long it lasted.
func (t *horizonTracker) due(st HorizonStatus) (warn []int, clear []LogHorizon) {
	for i, l := range st.Logs {
		switch {
		case l.Waiting && l.HeldFor >= t.cfg.WarnAfter:
			if t.lastWarn[i].IsZero() || st.ObservedAt.Sub(t.lastWarn[i]) >= t.cfg.WarnEvery {
				t.lastWarn[i] = st.ObservedAt
				t.warned[i] = true
				warn = append(warn, i)
			}
		case t.warned[i] && (!l.Waiting || l.HeldFor < t.heldFor[i]):
			// No row waits any more, or the horizon moved (the held time
			// started over): the wait warned about is over.
			t.warned[i] = false
			clear = append(clear, LogHorizon{Schema: l.Schema, Log: l.Log, HeldFor: t.heldFor[i]})
		}
		t.heldFor[i] = l.HeldFor
	}
	return warn, clear
}
