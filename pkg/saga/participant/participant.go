package participant

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"

	"github.com/vextrus/dtx/internal/pgtx"
	"github.com/vextrus/dtx/internal/sqlfile"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/migrate"
	"github.com/vextrus/dtx/pkg/saga"
)

// Defaults and limits of Config.
const (
	// DefaultSchema is the schema of the barrier table when Config.Schema
	// is empty.
	DefaultSchema = migrate.DefaultSchema
	// MaxNameLen is the longest Config.Name, in bytes.
	MaxNameLen = 255
	// DefaultSourcePrefix starts Config.Source when it is empty: the
	// default source is DefaultSourcePrefix followed by Config.Name.
	DefaultSourcePrefix = "/dtx/participant/"
)

// lockSeed is the seed of hashtextextended for the barrier's lock ids, so
// that they rarely collide with other advisory locks. A collision costs
// waiting, never correctness.
const lockSeed int64 = 0x6474787061727469 // "dtxparti"

// pruneBatch is the most rows one statement of Prune deletes.
const pruneBatch = 1000

// savepoint is taken before an action's handler runs, so that a rejection
// discards the handler's writes and keeps the barrier row.
const savepoint = "dtx_participant_action"

// ErrIsolation is wrapped by the error of a command handled in a REPEATABLE
// READ transaction: the barrier needs each statement to see what the
// transactions it waited for committed, which READ COMMITTED gives and
// SERIALIZABLE checks. Nothing was decided; roll the transaction back.
var ErrIsolation = errors.New("participant: the barrier needs a READ COMMITTED or SERIALIZABLE transaction")

// ErrInvalidReply is wrapped by the error of an action handler that returned
// a Reply, or a Reject, without a type. It is marked messaging.Permanent:
// the command is dead-lettered, to be replayed once the handler is fixed.
var ErrInvalidReply = errors.New("participant: invalid reply")

// Config configures a Participant.
type Config struct {
	// Name names the participating service in the barrier table, e.g.
	// "payments". Replicas of one service share it; services sharing a
	// schema need different names. Required; 1 to MaxNameLen bytes of
	// UTF-8 without control characters.
	Name string

	// Schema is the PostgreSQL schema holding the barrier table (and,
	// normally, the outbox). Defaults to DefaultSchema ("dtx"); must pass
	// [migrate.ValidateSchemaName].
	Schema string

	// Outbox is the service's outbox, which writes the replies in the
	// command's transaction; its Config.Registry, if any, validates them.
	// Required.
	Outbox *outbox.Outbox

	// Source is the ce_source of replies, a URI reference. Defaults to
	// DefaultSourcePrefix + Name ("/dtx/participant/<Name>").
	Source string

	// TxOptions are the options of the transaction Handle opens. Defaults
	// to the zero value: READ COMMITTED, read-write. REPEATABLE READ is
	// refused (see ErrIsolation); under SERIALIZABLE an action and its
	// compensation handled at once may fail with a serialization failure,
	// which is retried.
	TxOptions pgx.TxOptions

	// Propagator writes the trace context of the handling span (the span in
	// the message's context) into each reply. Defaults to W3C Trace Context
	// (propagation.TraceContext).
	Propagator propagation.TextMapPropagator

	// Logger receives refused actions (info) and every result (debug).
	// Defaults to no logging.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.Source == "" {
		c.Source = DefaultSourcePrefix + c.Name
	}
	if c.Propagator == nil {
		c.Propagator = propagation.TraceContext{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	var errs []error
	if err := validateName(c.Name); err != nil {
		errs = append(errs, fmt.Errorf("participant: Name: %w", err))
	}
	if err := migrate.ValidateSchemaName(c.Schema); err != nil {
		errs = append(errs, fmt.Errorf("participant: Schema: %w", err))
	}
	if c.Outbox == nil {
		errs = append(errs, errors.New("participant: Outbox: required"))
	}
	if _, err := messaging.NewEnvelope("dtx.participant.check", c.Source, nil); err != nil {
		errs = append(errs, fmt.Errorf("participant: Source: %q is not a valid CloudEvents source: %w", c.Source, err))
	}
	if c.TxOptions.IsoLevel == pgx.RepeatableRead {
		errs = append(errs, fmt.Errorf("participant: TxOptions: IsoLevel: %w", ErrIsolation))
	}
	return errors.Join(errs...)
}

// validateName checks a participant name against the barrier table and the
// lock key: 1 to MaxNameLen bytes of UTF-8 without control characters.
func validateName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > MaxNameLen:
		return fmt.Errorf("is %d bytes long, more than %d", len(s), MaxNameLen)
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.ContainsFunc(s, unicode.IsControl):
		return errors.New("contains a control character")
	}
	return nil
}

//go:embed sql/*.sql
var sqlFiles embed.FS

// queries holds the package's SQL with the schema filled in.
type queries struct {
	lock, claim, settle, prune string
}

func loadQueries(schema string) (queries, error) {
	l := sqlfile.NewLoader(sqlFiles, "sql", schema)
	q := queries{lock: l.Load("lock.sql"), claim: l.Load("claim.sql"), settle: l.Load("settle.sql"), prune: l.Load("prune.sql")}
	if err := l.Err(); err != nil {
		return queries{}, fmt.Errorf("participant: %w", err)
	}
	return q, nil
}

// Result says what handling a command did.
type Result int

const (
	// Applied means the action's handler ran; its effects and its reply
	// committed with the barrier row.
	Applied Result = iota + 1
	// Rejected means the action's handler rejected the command (Reject); its
	// writes were discarded, the failure reply committed with the barrier
	// row.
	Rejected
	// Duplicate means the same phase of the step was handled before: its
	// handler did not run again. A redelivery of the command that was
	// handled gets no reply (its reply committed with the barrier row); a
	// command sent again (another command id: the orchestrator's next
	// attempt, an operator's retry) is answered with the reply recorded
	// then, re-sent (see the package documentation, "Commands sent again").
	Duplicate
	// Refused means an action that came after the step's compensation; its
	// handler did not run and no reply was sent.
	Refused
	// EmptyCompensation means a compensation with nothing to undo here, because
	// the action never ran (not received yet, rejected or refused); its
	// handler did not run, the success reply was sent.
	EmptyCompensation
	// Compensated means the compensation's handler undid an applied action; the
	// success reply was sent.
	Compensated
)

// String returns the result's name in snake case, as the metric label
// "result" spells it.
func (r Result) String() string {
	switch r {
	case Applied:
		return "applied"
	case Rejected:
		return "rejected"
	case Duplicate:
		return "duplicate"
	case Refused:
		return "refused"
	case EmptyCompensation:
		return "empty_compensation"
	case Compensated:
		return "compensated"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Reply is what an action's handler answers: the reply's CloudEvents type,
// one the saga step lists as success (or failure), and its payload.
type Reply struct {
	// Type is the reply's ce_type. Required.
	Type string
	// Data is the payload: a json.RawMessage is used as it is, nil means
	// none, anything else is encoded with encoding/json (see
	// messaging.NewEnvelope). The orchestrator merges it into the saga's
	// data.
	Data any
}

// RejectError is the error Reject returns: an action refused for a business
// reason, answered with a failure reply.
type RejectError struct {
	// Reply is the failure reply.
	Reply Reply
}

// Error implements error.
func (e *RejectError) Error() string {
	return "participant: action rejected with reply " + e.Reply.Type
}

// Reject returns the error an action's handler returns to refuse the command
// for a business reason (insufficient funds, out of stock): the barrier
// records the action as rejected and the reply of type replyType with data
// commits with it, so the orchestrator compensates. Whatever the handler
// wrote in the transaction before rejecting is discarded (the Participant
// rolls back to a savepoint taken before the handler ran), also after a
// failed statement, so a handler may try a write and reject when a
// constraint refuses it. A later compensation of the step finds nothing to
// undo and does not call its handler. The handler may wrap the error.
func Reject(replyType string, data any) error {
	return &RejectError{Reply: Reply{Type: replyType, Data: data}}
}

// ActionFunc runs a step's action in tx, the transaction that holds the
// barrier row and will hold the reply, and returns the reply. ctx also
// carries tx (messaging.TxFromContext), for code such as outbox.ContextPublisher.
// Its effects must go through tx to happen once. It must not commit or roll
// back tx. It returns Reject for a business failure; any other error rolls
// the whole transaction back and is returned to the caller (the router's
// retry and dead-letter middleware), so the command is handled again later.
type ActionFunc func(ctx context.Context, tx pgx.Tx, cmd Command) (Reply, error)

// CompensationFunc undoes, in tx, what the step's applied action did, and
// returns the data of the success reply (nil: none). It runs only when the
// action was applied here. ctx also carries tx. Its error rolls the
// transaction back and is returned; a compensation cannot be rejected
// (Reject is an ordinary error here): it must succeed eventually.
type CompensationFunc func(ctx context.Context, tx pgx.Tx, cmd Command) (data any, err error)

// ReplyDataFunc builds the data of a compensation's success reply when its
// handler does not run: the compensation found nothing to undo (the action
// never ran here, was rejected or refused), or it is a compensation sent
// again after it was done. It must not fail: build the reply from cmd (its
// Data holds the compensation command's payload) and the time.
type ReplyDataFunc func(cmd Command) any

type compensation struct {
	replyType string
	fn        CompensationFunc
	empty     ReplyDataFunc
}

func (c compensation) emptyData(cmd Command) any {
	if c.empty == nil {
		return nil
	}
	return c.empty(cmd)
}

// Participant handles a service's saga commands behind the barrier and
// replies through the service's outbox, each command in one transaction. It
// is safe for concurrent use.
type Participant struct {
	pool *pgxpool.Pool
	cfg  Config
	q    queries

	mu            sync.RWMutex
	actions       map[string]ActionFunc
	compensations map[string]compensation

	results *prometheus.CounterVec
	// repeated counts the commands sent again, by what answered them.
	repeated *prometheus.CounterVec
}

// Answers to a command sent again, as the metric label "reply" spells them.
const (
	// repeatResent: the recorded reply was re-sent.
	repeatResent = "resent"
	// repeatRefused: the action was refused; nothing to answer.
	repeatRefused = "refused"
	// repeatNotRecorded: the barrier row predates recorded replies (an
	// action handled before migration 011); nothing could be re-sent.
	repeatNotRecorded = "not_recorded"
)

// New returns a Participant named cfg.Name on pool. It checks cfg and fails
// with an error naming every invalid field; it does not touch the database.
// pool may be nil for a Participant used only through HandleTx, but Handle
// and Prune need it.
func New(pool *pgxpool.Pool, cfg Config) (*Participant, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q, err := loadQueries(cfg.Schema)
	if err != nil {
		return nil, err
	}
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dtx_participant_commands_total",
		Help: "Saga commands a participant handled, by result: applied, rejected, duplicate, refused, " +
			"empty_compensation, compensated. Counted when handling returns, before the commit.",
		ConstLabels: prometheus.Labels{"participant": cfg.Name},
	}, []string{"result"})
	for r := Applied; r <= Compensated; r++ {
		results.WithLabelValues(r.String())
	}
	repeated := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dtx_participant_repeated_commands_total",
		Help: "Saga commands sent again (another command id for a step and phase already handled), by what answered " +
			"them: resent (the reply recorded in the barrier, again), refused (nothing: the action was refused), " +
			"not_recorded (nothing: the barrier row was written before replies were recorded).",
		ConstLabels: prometheus.Labels{"participant": cfg.Name},
	}, []string{"reply"})
	for _, r := range []string{repeatResent, repeatRefused, repeatNotRecorded} {
		repeated.WithLabelValues(r)
	}
	return &Participant{
		pool: pool, cfg: cfg, q: q,
		actions:       make(map[string]ActionFunc),
		compensations: make(map[string]compensation),
		results:       results,
		repeated:      repeated,
	}, nil
}

// Name returns the participant's name, Config.Name.
func (p *Participant) Name() string { return p.cfg.Name }

// Collector returns the Participant's metrics for registration with a
// Prometheus registry: the counters
// dtx_participant_commands_total{participant, result} and
// dtx_participant_repeated_commands_total{participant, reply}.
func (p *Participant) Collector() prometheus.Collector {
	return collectors{p.results, p.repeated}
}

// collectors is several collectors as one.
type collectors []prometheus.Collector

// Describe implements prometheus.Collector.
func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}

// Action registers fn as the handler of action commands of type
// commandType. Like http.ServeMux, it panics on a programming error: an
// empty type, a nil fn or a type already registered as an action.
func (p *Participant) Action(commandType string, fn ActionFunc) {
	if commandType == "" || fn == nil {
		panic("participant: Action needs a command type and a function")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.actions[commandType]; dup {
		panic("participant: action " + commandType + " registered twice")
	}
	p.actions[commandType] = fn
}

// Compensation registers fn as the handler of compensation commands of type
// commandType; successReplyType is the type of the reply sent once the
// compensation is done (or found nothing to undo), with the data fn
// returns, or that empty builds when fn does not run (nil: no data; see
// ReplyDataFunc). It panics on a programming error: an empty type or reply
// type, a nil fn or a type already registered as a compensation.
func (p *Participant) Compensation(commandType, successReplyType string, fn CompensationFunc, empty ReplyDataFunc) {
	if commandType == "" || successReplyType == "" || fn == nil {
		panic("participant: Compensation needs a command type, a reply type and a function")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.compensations[commandType]; dup {
		panic("participant: compensation " + commandType + " registered twice")
	}
	p.compensations[commandType] = compensation{replyType: successReplyType, fn: fn, empty: empty}
}

// Handle handles msg, a saga command, in a transaction of its own on the
// pool (Config.TxOptions), begun with msg.Context(), and commits it. It is a
// Watermill message.NoPublishHandlerFunc, for a router's
// AddConsumerHandler (behind middleware.Standard, whose Validate middleware
// it reuses the decoded envelope of).
//
// It returns nil once the command's outcome has committed, also for a
// duplicate or a refused action, so the message is acked. A malformed or
// unknown command fails with a permanent error (dead-lettered); a handler's
// error or a database error rolls everything back and is returned for the
// retry middleware to decide. A failed commit is returned too; if the commit
// did in fact succeed, the redelivery is a duplicate.
func (p *Participant) Handle(msg *message.Message) error {
	_, err := p.handle(msg)
	return err
}

func (p *Participant) handle(msg *message.Message) (_ Result, err error) {
	if p.pool == nil {
		return 0, errors.New("participant: Handle needs a pool: New was given none")
	}
	if msg == nil {
		return 0, messaging.Permanent(fmt.Errorf("%w: nil message", ErrInvalidCommand))
	}
	ctx := msg.Context()
	tx, err := p.pool.BeginTx(ctx, p.cfg.TxOptions)
	if err != nil {
		return 0, fmt.Errorf("participant %s: begin transaction: %w", p.cfg.Name, err)
	}
	ended := false
	defer func() {
		if !ended {
			pgtx.Rollback(ctx, tx)
		}
	}()
	res, err := p.HandleTx(ctx, tx, msg)
	if err != nil {
		return 0, err
	}
	ended = true // whatever Commit returns, the transaction has ended
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("participant %s: commit command %q: %w", p.cfg.Name, msg.UUID, err)
	}
	return res, nil
}

// HandleTx is Handle in the caller's transaction tx, for a caller that
// manages its own: it takes the step's lock, checks and records the barrier,
// runs the handler and writes the reply to the outbox, all in tx, and
// returns what happened. The caller commits tx when HandleTx returns nil and
// must roll it back after any error: tx may hold part of the work.
//
// tx must be READ COMMITTED or SERIALIZABLE (else ErrIsolation). For per-key
// order of the replies (see package outbox), HandleTx locks the reply's key
// before writing anything; if tx wrote before, outbox.Config.KeyOrder
// applies and HandleTx may fail with an error wrapping outbox.ErrKeyOrder:
// roll back and retry. HandleTx takes and releases a savepoint in tx when it
// runs an action's handler.
func (p *Participant) HandleTx(ctx context.Context, tx pgx.Tx, msg *message.Message) (Result, error) {
	if tx == nil {
		return 0, errors.New("participant: HandleTx needs a transaction")
	}
	cmd, err := parseCommand(msg)
	if err != nil {
		return 0, err
	}
	res, err := p.handleCommand(ctx, tx, cmd)
	if err != nil {
		return 0, err
	}
	p.results.WithLabelValues(res.String()).Inc()
	level := slog.LevelDebug
	if res == Refused {
		level = slog.LevelInfo
	}
	p.cfg.Logger.Log(ctx, level, "participant: saga command handled", "participant", p.cfg.Name,
		"result", res.String(), "saga_id", cmd.SagaID, "step", cmd.Step, "phase", string(cmd.Phase),
		"attempt", cmd.Attempt, "type", cmd.Type, "command_id", cmd.Envelope.ID)
	return res, nil
}

func (p *Participant) handleCommand(ctx context.Context, tx pgx.Tx, cmd Command) (Result, error) {
	var (
		action ActionFunc
		comp   compensation
		ok     bool
	)
	p.mu.RLock()
	if cmd.Phase == saga.PhaseAction {
		action, ok = p.actions[cmd.Type]
	} else {
		comp, ok = p.compensations[cmd.Type]
	}
	p.mu.RUnlock()
	if !ok {
		return 0, messaging.Permanent(fmt.Errorf("%w: participant %s has no %s handler for %q (command %q)",
			ErrUnknownCommand, p.cfg.Name, cmd.Phase, cmd.Type, cmd.Envelope.ID))
	}
	ctx = messaging.ContextWithTx(ctx, tx)

	// One round trip: the reply key's lock (taken first, so that replies of
	// one saga keep their commit order), the step's lock, the barrier row
	// and, for an action, the savepoint its handler may roll back to.
	var (
		b          pgx.Batch
		isolation  string
		claimed    *string
		other      *string
		firstID    *string
		first      *string // outcome of the existing row of the same phase
		firstReply recorded
		replyType  *string
		hasHandler = cmd.Phase == saga.PhaseAction
	)
	check, err := p.cfg.Outbox.QueueLock(&b, cmd.ReplyTo, cmd.SagaID)
	if err != nil {
		return 0, messaging.Permanent(fmt.Errorf("%w %q: reply topic %q: %w", ErrInvalidCommand, cmd.Envelope.ID, cmd.ReplyTo, err))
	}
	if !hasHandler {
		replyType = &comp.replyType
	}
	b.Queue(p.q.lock, p.cfg.Name, cmd.SagaID, cmd.Step, lockSeed).QueryRow(func(row pgx.Row) error {
		return row.Scan(&isolation)
	})
	b.Queue(p.q.claim, p.cfg.Name, cmd.SagaID, cmd.Step, string(cmd.Phase), cmd.Envelope.ID, replyType).
		QueryRow(func(row pgx.Row) error {
			return row.Scan(&claimed, &other, &firstID, &first, &firstReply.headers, &firstReply.payload)
		})
	if hasHandler {
		b.Queue("SAVEPOINT " + savepoint)
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return 0, p.errorf(cmd, "record the barrier", err)
	}
	if err := check(ctx, tx); err != nil {
		return 0, p.errorf(cmd, "lock the reply key", err)
	}
	if isolation == "repeatable read" {
		return 0, fmt.Errorf("participant %s: command %q: %w", p.cfg.Name, cmd.Envelope.ID, ErrIsolation)
	}
	if claimed == nil {
		if firstID == nil || *firstID != cmd.Envelope.ID {
			if err := p.answerAgain(ctx, tx, cmd, comp, first, firstReply); err != nil {
				return 0, err
			}
		}
		// Else a redelivery of the command handled: its reply committed
		// with the barrier row and is on its way.
		return Duplicate, nil
	}

	if cmd.Phase == saga.PhaseCompensation {
		res, data := EmptyCompensation, any(nil)
		if *claimed == outcomeApplied {
			var err error
			if data, err = comp.fn(ctx, tx, cmd); err != nil {
				return 0, p.errorf(cmd, "compensation handler", err)
			}
			res = Compensated
		} else {
			data = comp.emptyData(cmd)
		}
		env, rec, err := p.replyEnvelope(ctx, cmd, Reply{Type: comp.replyType, Data: data})
		if err != nil {
			return 0, err
		}
		b = pgx.Batch{}
		b.Queue(p.q.settle, p.cfg.Name, cmd.SagaID, cmd.Step, string(cmd.Phase), nil, comp.replyType, rec.headers, rec.payload)
		if err := p.sendBatch(ctx, tx, &b, cmd, env); err != nil {
			return 0, err
		}
		return res, nil
	}

	if *claimed == outcomeRefused {
		return Refused, nil
	}
	reply, err := action(ctx, tx, cmd)
	res, outcome := Applied, outcomeApplied
	if rej, ok := errors.AsType[*RejectError](err); ok {
		reply, res, outcome = rej.Reply, Rejected, outcomeRejected
	} else if err != nil {
		return 0, p.errorf(cmd, "action handler", err)
	}
	if reply.Type == "" {
		return 0, messaging.Permanent(fmt.Errorf("participant %s: command %q (type %q): the action handler's %s reply has no type: %w",
			p.cfg.Name, cmd.Envelope.ID, cmd.Type, res, ErrInvalidReply))
	}
	env, rec, err := p.replyEnvelope(ctx, cmd, reply)
	if err != nil {
		return 0, err
	}
	if res == Rejected {
		// On its own: the handler may have left the transaction aborted,
		// and a batch prepares its statements before running any.
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); err != nil {
			return 0, p.errorf(cmd, "discard the rejected action's writes", err)
		}
	}
	b = pgx.Batch{}
	b.Queue("RELEASE SAVEPOINT " + savepoint)
	b.Queue(p.q.settle, p.cfg.Name, cmd.SagaID, cmd.Step, string(cmd.Phase), outcome, reply.Type, rec.headers, rec.payload)
	if err := p.sendBatch(ctx, tx, &b, cmd, env); err != nil {
		return 0, err
	}
	return res, nil
}

// Outcomes recorded in the barrier table.
const (
	outcomeApplied  = "applied"
	outcomeRejected = "rejected"
	outcomeRefused  = "refused"
)

// recorded is a reply as the barrier keeps it: the headers and the payload
// of the record given to the outbox. Both are nil when none is kept.
type recorded struct {
	headers []byte // a JSON object of strings
	payload []byte
}

// replyEnvelope builds the reply r to cmd, and the form the barrier keeps it
// in.
func (p *Participant) replyEnvelope(ctx context.Context, cmd Command, r Reply) (messaging.Envelope, recorded, error) {
	env, err := messaging.NewEnvelope(r.Type, p.cfg.Source, r.Data)
	if err != nil {
		return messaging.Envelope{}, recorded{}, messaging.Permanent(fmt.Errorf("participant %s: reply %q to command %q: %w: %w",
			p.cfg.Name, r.Type, cmd.Envelope.ID, ErrInvalidReply, err))
	}
	env = env.CausedBy(cmd.Envelope)
	env.SagaID = cmd.SagaID
	env.PartitionKey = cmd.SagaID
	env.Extensions = map[string]string{
		extension(saga.HeaderStep):    cmd.Step,
		extension(saga.HeaderAttempt): cmd.attempt,
		extension(saga.HeaderPhase):   string(cmd.Phase),
	}
	p.stampTrace(ctx, &env)
	rec, err := record(env)
	if err != nil {
		return messaging.Envelope{}, recorded{}, messaging.Permanent(fmt.Errorf("participant %s: reply %q to command %q: %w: %w",
			p.cfg.Name, r.Type, cmd.Envelope.ID, ErrInvalidReply, err))
	}
	return env, rec, nil
}

// stampTrace writes the trace context of the span in ctx into env.
func (p *Participant) stampTrace(ctx context.Context, env *messaging.Envelope) {
	carrier := make(message.Metadata)
	p.cfg.Propagator.Inject(ctx, middleware.MetadataCarrier(carrier))
	env.TraceParent = carrier[messaging.HeaderTraceParent]
	env.TraceState = carrier[messaging.HeaderTraceState]
}

// record returns env as the barrier keeps it: the metadata and payload of
// its message, which messaging.Decode reads back as env.
func record(env messaging.Envelope) (recorded, error) {
	msg, err := env.ToMessage()
	if err != nil {
		return recorded{}, err
	}
	headers, err := json.Marshal(map[string]string(msg.Metadata))
	if err != nil {
		return recorded{}, err
	}
	payload := []byte(msg.Payload)
	if payload == nil {
		payload = []byte{} // NULL means no reply kept
	}
	return recorded{headers: headers, payload: payload}, nil
}

// envelope reads a kept reply back.
func (r recorded) envelope() (messaging.Envelope, error) {
	var md map[string]string
	if err := json.Unmarshal(r.headers, &md); err != nil {
		return messaging.Envelope{}, fmt.Errorf("decode its headers: %w", err)
	}
	msg := message.NewMessage(md[messaging.HeaderID], r.payload)
	msg.Metadata = md
	return messaging.Decode(msg)
}

// answerAgain answers cmd, a command sent again for a step and phase whose
// row exists (outcome first, reply rec), in tx, without running a handler.
func (p *Participant) answerAgain(ctx context.Context, tx pgx.Tx, cmd Command, comp compensation, first *string, rec recorded) error {
	var env messaging.Envelope
	switch {
	case rec.headers != nil:
		kept, err := rec.envelope()
		if err != nil {
			// The row holds what this package wrote: it cannot be at fault
			// unless edited by hand.
			return messaging.Permanent(p.errorf(cmd, "read the recorded reply", err))
		}
		if env, err = p.resent(ctx, cmd, kept); err != nil {
			return err
		}
	case cmd.Phase == saga.PhaseCompensation:
		// A row written before replies were kept: a compensation's
		// success reply is known, its data is what the empty function
		// builds.
		var err error
		if env, _, err = p.replyEnvelope(ctx, cmd, Reply{Type: comp.replyType, Data: comp.emptyData(cmd)}); err != nil {
			return err
		}
	case first != nil && *first == outcomeRefused:
		// Nothing was answered the first time either: the orchestrator has
		// moved on to the compensation.
		p.repeated.WithLabelValues(repeatRefused).Inc()
		return nil
	default:
		// An action handled before replies were kept: its reply cannot be
		// rebuilt, and running the handler again would apply it twice.
		p.repeated.WithLabelValues(repeatNotRecorded).Inc()
		p.cfg.Logger.WarnContext(ctx, "participant: saga command sent again, but its step's reply was not recorded; "+
			"sending nothing: the saga will time out and compensate", "participant", p.cfg.Name,
			"saga_id", cmd.SagaID, "step", cmd.Step, "phase", string(cmd.Phase), "attempt", cmd.Attempt,
			"type", cmd.Type, "command_id", cmd.Envelope.ID, "first_command_id", deref(first))
		return nil
	}
	var b pgx.Batch
	if err := p.sendBatch(ctx, tx, &b, cmd, env); err != nil {
		return err
	}
	p.repeated.WithLabelValues(repeatResent).Inc()
	return nil
}

// resent returns the kept reply as the answer to cmd: the same type, source,
// payload, correlation and saga headers, with a new id and time, cmd as its
// cause, cmd's attempt and the trace context of ctx. A new id, because the
// orchestrator drops a reply whose id it has handled, also one it handled
// while it was not waiting for it; cmd's attempt, because it accepts replies
// only to attempts it has sent, and an operator's retry starts them again.
func (p *Participant) resent(ctx context.Context, cmd Command, kept messaging.Envelope) (messaging.Envelope, error) {
	fresh, err := messaging.NewEnvelope(kept.Type, kept.Source, nil)
	if err != nil {
		return messaging.Envelope{}, messaging.Permanent(p.errorf(cmd, "re-send the recorded reply", err))
	}
	env := kept
	env.ID, env.Time = fresh.ID, fresh.Time
	env.CausationID = cmd.Envelope.ID
	env.Extensions = maps.Clone(kept.Extensions)
	if env.Extensions == nil {
		env.Extensions = map[string]string{}
	}
	env.Extensions[extension(saga.HeaderAttempt)] = cmd.attempt
	p.stampTrace(ctx, &env)
	return env, nil
}

// sendBatch sends b, with the reply env to cmd's reply topic queued after
// its statements, in tx.
func (p *Participant) sendBatch(ctx context.Context, tx pgx.Tx, b *pgx.Batch, cmd Command, env messaging.Envelope) error {
	check, err := p.cfg.Outbox.QueueWriteEnvelopes(b, cmd.ReplyTo, env)
	if err != nil {
		if _, bad := errors.AsType[*outbox.MessageError](err); bad {
			// The reply itself is at fault (schema, size): retrying cannot help.
			err = messaging.Permanent(err)
		}
		return p.errorf(cmd, "write the reply "+env.Type, err)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return p.errorf(cmd, "record the reply "+env.Type, err)
	}
	if err := check(); err != nil {
		return p.errorf(cmd, "write the reply "+env.Type, err)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (p *Participant) errorf(cmd Command, what string, err error) error {
	return fmt.Errorf("participant %s: %s command %q (type %q, saga %q, step %q): %s: %w",
		p.cfg.Name, cmd.Phase, cmd.Envelope.ID, cmd.Type, cmd.SagaID, cmd.Step, what, err)
}

// Prune deletes the participant's barrier rows created more than olderThan
// ago and returns how many it deleted, also when it fails part way. Each
// statement deletes at most 1000 rows and commits on its own, skipping rows
// that a transaction handling a command holds.
//
// Retention is a trade-off: a command delivered again after its row was
// pruned runs again, and a compensation whose action row was pruned finds
// nothing to undo. olderThan must therefore outlast every redelivery and
// every saga's life, compensation retries and operator resumes included
// (days, not minutes). It must be positive.
func (p *Participant) Prune(ctx context.Context, olderThan time.Duration) (int64, error) {
	if p.pool == nil {
		return 0, errors.New("participant: Prune needs a pool: New was given none")
	}
	if olderThan <= 0 {
		return 0, fmt.Errorf("participant %s: prune: olderThan %s is not positive", p.cfg.Name, olderThan)
	}
	var total int64
	for {
		tag, err := p.pool.Exec(ctx, p.q.prune, p.cfg.Name, olderThan.Microseconds(), pruneBatch)
		if err != nil {
			return total, fmt.Errorf("participant %s: prune the barrier: %w", p.cfg.Name, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneBatch {
			return total, nil
		}
	}
}
