package txlog

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/vextrus/dtx/internal/sweep"
)

// Defaults and limits of PrunerConfig.
const (
	// DefaultPruneInterval is the pause between two prunes when
	// PrunerConfig.Interval is zero.
	DefaultPruneInterval = sweep.DefaultInterval
	// DefaultPruneBatchSize is the most rows one prune statement deletes when
	// PrunerConfig.BatchSize is zero.
	DefaultPruneBatchSize = sweep.DefaultBatchSize
	// MaxPruneBatchSize is the largest PrunerConfig.BatchSize accepted.
	MaxPruneBatchSize = sweep.MaxBatchSize
)

// PrunerConfig configures a Pruner.
type PrunerConfig struct {
	// Schema is the PostgreSQL schema holding the log table and
	// txlog_checkpoints. Defaults to DefaultSchema ("dtx"); must pass
	// migrate.ValidateSchemaName.
	Schema string

	// Log is the log table's name, without schema, as the readers'
	// Config.Log. Required; a plain lower-case identifier.
	Log string

	// Interval is the pause between two prunes of Run and Start.
	// Defaults to DefaultPruneInterval (1 minute); between 1 second and 24 hours.
	Interval time.Duration

	// BatchSize is the most rows one DELETE statement removes; smaller
	// batches hold locks for less time.
	// Defaults to DefaultPruneBatchSize (1000); between 1 and MaxPruneBatchSize.
	BatchSize int

	// Logger receives prune failures (warn) and results (debug).
	// Defaults to no logging.
	Logger *slog.Logger
}

func (c *PrunerConfig) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	sweep.SetDefaults(&c.Interval, &c.BatchSize)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *PrunerConfig) validate() error {
	errs := validateTable("txlog: ", c.Schema, c.Log)
	errs = append(errs, sweep.Validate("txlog: ", "Interval", "BatchSize", c.Interval, c.BatchSize)...)
	return errors.Join(errs...)
}

// Pruner is a log's retention: it deletes the rows that every registered
// reader of the log has passed, that is the rows at or before the lowest
// checkpoint of the log in txlog_checkpoints. With no reader registered it
// deletes nothing: a log nobody has read yet keeps everything. A reader that
// stops reading therefore stops retention too; Unregister a retired reader.
// Rows are deleted in batches, one short transaction each, through package
// sweep. A Pruner is safe for concurrent use.
type Pruner struct {
	sweeper *sweep.Sweeper
}

// NewPruner returns a Pruner of cfg.Log that runs its statements on db
// (typically a *pgxpool.Pool: each batch must commit on its own). It checks
// cfg and fails with an error naming every invalid field; it does not touch
// the database.
func NewPruner(db Querier, cfg PrunerConfig) (*Pruner, error) {
	if db == nil {
		return nil, errors.New("txlog: pruner: db is nil")
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	query, err := loadQuery("prune.sql", cfg.Schema, cfg.Log, nil)
	if err != nil {
		return nil, err
	}
	return &Pruner{sweeper: sweep.New(sweep.Config{
		Name: "txlog", Interval: cfg.Interval, BatchSize: cfg.BatchSize, Logger: cfg.Logger,
		LogAttrs: []any{"log", cfg.Log},
		BatchFunc: func(ctx context.Context, limit int) (int64, error) {
			tag, err := db.Exec(ctx, query, cfg.Log, limit)
			return tag.RowsAffected(), err
		},
	})}, nil
}

// Prune deletes, batch after batch, every row that all registered readers
// have passed, and returns how many it deleted, also when it fails part way.
// Rows other transactions hold locked are skipped until the next prune, so
// Prune never waits on other work and replicas may prune at once. Rows are
// judged against the checkpoints as each batch finds them: a reader
// registered while a prune runs may find rows gone that it never read.
func (p *Pruner) Prune(ctx context.Context) (int64, error) { return p.sweeper.Sweep(ctx) }

// Run prunes at once and then every Interval until ctx is done, and returns
// nil then. A failed prune is logged and retried at the next interval.
func (p *Pruner) Run(ctx context.Context) error { return p.sweeper.Run(ctx) }

// Start runs Run in a goroutine the Pruner owns, until ctx is done or Stop
// is called. It fails with ErrAlreadyStarted if that goroutine still runs.
func (p *Pruner) Start(ctx context.Context) error {
	if err := p.sweeper.Start(ctx); err != nil {
		if errors.Is(err, sweep.ErrAlreadyStarted) {
			return ErrAlreadyStarted
		}
		return err
	}
	return nil
}

// Stop ends the goroutine Start began and waits for it; a prune in progress
// is interrupted. It is safe to call more than once, and without Start.
func (p *Pruner) Stop() { p.sweeper.Stop() }
