package relay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/txlog"
	"github.com/vextrus/dtx/internal/wait"
)

// Fault is something that keeps the relay from publishing some rows: a
// held topic, or the fault that stopped publishing altogether.
type Fault struct {
	// Topic is the topic whose row the broker did not accept.
	Topic string
	// Reason is the broker's error (UNKNOWN_TOPIC_OR_PARTITION,
	// INVALID_TIMESTAMP, ...), "timeout" or "other", as in
	// dtx_relay_publish_retries_total.
	Reason string
	// Since is when the fault was first met, by the relay's clock.
	Since time.Time
	// Held is the number of the topic's rows waiting in outbox_held; 0 when
	// the fault stopped publishing altogether.
	Held int
	// Stopped reports a fault that stops publishing of every topic: the
	// relay backs off and publishes again from the row the broker did not
	// accept (a broker that does not answer, a clock it refuses, ...).
	Stopped bool
}

func (f Fault) String() string {
	since := f.Since.UTC().Format(time.RFC3339)
	if f.Stopped {
		return fmt.Sprintf("publishing of every topic stopped since %s: the broker did not acknowledge a row of topic %q (%s); retrying with backoff",
			since, f.Topic, f.Reason)
	}
	return fmt.Sprintf("topic %q held since %s (%s): %d rows wait in outbox_held; the other topics are published",
		f.Topic, since, f.Reason, f.Held)
}

// Faults returns what keeps this replica from publishing rows now: the
// topics it holds, by name, then the fault that stopped publishing, if any.
// It is empty while every row is published, and on a standby. Safe for
// concurrent use.
func (r *Relay) Faults() []Fault {
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	return slices.Clone(r.faults)
}

// Health returns nil while the relay publishes every row it reads, and an
// error naming each held topic and the fault that stopped publishing
// otherwise (see Faults): the readiness check of outbox-relay. Safe for
// concurrent use.
func (r *Relay) Health() error {
	fs := r.Faults()
	if len(fs) == 0 {
		return nil
	}
	msgs := make([]string, len(fs))
	for i, f := range fs {
		msgs[i] = f.String()
	}
	return errors.New("relay: " + strings.Join(msgs, "; "))
}

// report publishes the loop's state for Faults: the held topics of hs (nil:
// none) and stop (nil: publishing goes on).
func (r *Relay) report(hs *heldState, stop *Fault) {
	var fs []Fault
	if hs != nil {
		for _, topic := range slices.Sorted(maps.Keys(hs.topics)) {
			ht := hs.topics[topic]
			fs = append(fs, Fault{Topic: topic, Reason: ht.reason, Since: ht.since, Held: ht.rows})
		}
	}
	if stop != nil {
		fs = append(fs, *stop)
	}
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	r.faults = fs
}

// heldState is what the publishing replica knows of its rows in
// outbox_held during one lease term: the held topics, each with its retry
// in flight. It belongs to the loop's goroutine.
type heldState struct {
	token  int64
	topics map[string]*heldTopic
	// landed is signalled by each retry in flight once the broker answered
	// for it, to wake the loop.
	landed chan struct{}
}

// heldTopic is one held topic.
type heldTopic struct {
	rows    int       // in outbox_held
	reason  string    // of the last failure
	since   time.Time // held since
	due     time.Time // next retry
	backoff wait.Doubling
	flight  *flight // nil when no retry is in flight
}

// flight is a retry of a held topic's oldest rows, produced by a goroutine
// of its own so that the other topics are not held up while the broker
// answers.
type flight struct {
	rows []txlog.Row[row]
	errs []error
	done chan struct{}
}

// loadHeld reads the held topics of this relay at the start of a lease
// term; each is retried at once.
func (r *Relay) loadHeld(ctx context.Context, token int64) (*heldState, error) {
	hs := &heldState{token: token, topics: map[string]*heldTopic{}, landed: make(chan struct{}, 1)}
	rows, err := r.pool.Query(ctx, r.q.heldTopics, r.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("relay: read outbox_held: %w", err)
	}
	defer rows.Close()
	r.m.topicHeld.Reset()
	for rows.Next() {
		var (
			topic, reason string
			n             int
			since         time.Time
		)
		if err := rows.Scan(&topic, &n, &since, &reason); err != nil {
			return nil, fmt.Errorf("relay: read outbox_held: %w", err)
		}
		hs.topics[topic] = &heldTopic{rows: n, reason: reason, since: since, backoff: r.heldBackoff()}
		r.m.topicHeld.WithLabelValues(topic).Set(float64(n))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("relay: read outbox_held: %w", err)
	}
	return hs, nil
}

// holding is a row the relay copies to outbox_held, with why its topic is
// held.
type holding struct {
	pos    txlog.Position
	topic  string
	reason string
}

// plan is what publishing a batch came to: the first done rows are
// handled (acknowledged, rejected, or held), and the checkpoint may move
// past them; stop is the fault of the row after them, nil when done is the
// whole batch.
type plan struct {
	done     int
	rejected []rejection
	held     []holding
	newHeld  map[string]string // topics held from now on, with the reason
	stop     error
	// acked are the rows the broker acknowledged in this attempt (not
	// those of held topics, which were not produced).
	acked []txlog.Position
}

// planBatch sorts the rows of a batch by errs (publish's answer; rows of
// held topics and rows acknowledged before were skipped). A topic whose
// rows fail for a fault of the topic (isTopicScoped) is held from its first
// failed row on when the broker is otherwise well: a row of another topic
// of the batch was acknowledged, or the batch is full of the topic's rows
// alone. Any other failure (a broker that does not answer, a refused clock,
// every topic of the batch failing) stops the batch at its row.
func planBatch(b txlog.Batch[row], errs []error, hs *heldState, acked map[txlog.Position]struct{}) plan {
	rows := b.Rows
	isAcked := func(i int) bool {
		_, ok := acked[rows[i].Position]
		return ok
	}
	p := plan{newHeld: map[string]string{}}
	firstFail := map[string]int{}
	ackedTopics := map[string]bool{}
	topics := map[string]bool{}
	for i, rw := range rows {
		t := rw.Value.Topic
		topics[t] = true
		if _, held := hs.topics[t]; held {
			continue
		}
		switch err := errs[i]; {
		case err == nil:
			ackedTopics[t] = true
			if !isAcked(i) {
				p.acked = append(p.acked, rw.Position)
			}
		case isRefusedForGood(err):
		default:
			if _, ok := firstFail[t]; !ok {
				firstFail[t] = i
			}
		}
	}
	for t, i := range firstFail {
		others := len(ackedTopics) > 1 || len(ackedTopics) == 1 && !ackedTopics[t]
		alone := len(topics) == 1 && b.Full
		if isTopicScoped(errs[i]) && (others || alone) {
			p.newHeld[t] = retryReason(errs[i])
		}
	}
	for i, rw := range rows {
		t := rw.Value.Topic
		if ht, held := hs.topics[t]; held {
			if !isAcked(i) {
				p.held = append(p.held, holding{pos: rw.Position, topic: t, reason: ht.reason})
			}
			continue
		}
		err := errs[i]
		switch {
		case err == nil:
		case isRefusedForGood(err):
			p.rejected = append(p.rejected, rejection{pos: rw.Position, topic: t, reason: err.Error()})
		case p.newHeld[t] != "":
			p.held = append(p.held, holding{pos: rw.Position, topic: t, reason: p.newHeld[t]})
		default:
			p.done, p.stop = i, err
			return p
		}
	}
	p.done = len(rows)
	return p
}

// save moves the rejected rows to outbox_rejected, copies the held ones to
// outbox_held and moves the checkpoint to end in one transaction, fenced by
// the lease token: nothing is saved unless this replica still holds the
// lease with token.
func (r *Relay) save(ctx context.Context, l *lease, token int64, end txlog.Position, rejected []rejection, held []holding) error {
	// The batch's records are published: save even while draining.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if _, err := r.reader.SaveCheckpointFenced(ctx, tx, end, l.fence(token)); err != nil {
			return err
		}
		for _, rej := range rejected {
			if _, err := tx.Exec(ctx, r.q.reject, rej.pos.TxID, rej.pos.Pos, rej.reason, r.cfg.Holder); err != nil {
				return fmt.Errorf("relay: move row %s to outbox_rejected: %w", rej.pos, err)
			}
		}
		for _, h := range held {
			if _, err := tx.Exec(ctx, r.q.hold, h.pos.TxID, h.pos.Pos, r.cfg.Name, h.reason, r.cfg.Holder); err != nil {
				return fmt.Errorf("relay: copy row %s to outbox_held: %w", h.pos, err)
			}
		}
		return nil
	})
}

// applyHeld records in hs what a saved plan held: its new topics, and the
// rows each topic now holds.
func (r *Relay) applyHeld(hs *heldState, p plan, warned *retryWarnings) {
	now := time.Now()
	for _, h := range p.held {
		ht, ok := hs.topics[h.topic]
		if !ok {
			ht = &heldTopic{reason: h.reason, since: now, backoff: r.heldBackoff(), due: now.Add(wait.Jitter(minBackoff))}
			hs.topics[h.topic] = ht
			r.m.publishRetries.WithLabelValues(h.topic, h.reason).Inc()
			r.m.errors.WithLabelValues(errKindProduce).Inc()
			n, _ := warned.allow(h.topic, h.reason, now)
			r.cfg.Logger.Warn("relay: topic held: the broker does not take its rows for now; they wait in outbox_held, in order, "+
				"and are retried with backoff; the other topics are published",
				"topic", h.topic, "reason", h.reason, "position", h.pos.String(), "retries_not_logged", n)
		}
		ht.rows++
		r.m.topicHeld.WithLabelValues(h.topic).Set(float64(ht.rows))
	}
}

// tendHeld lands the retries of held topics the broker answered for and
// launches those due.
func (r *Relay) tendHeld(ctx context.Context, cl *kgo.Client, l *lease, hs *heldState, warned *retryWarnings) {
	for topic, ht := range hs.topics {
		if ht.flight == nil {
			continue
		}
		select {
		case <-ht.flight.done:
			r.land(ctx, l, hs, topic, ht, warned)
		default:
		}
	}
	now := time.Now()
	for topic, ht := range hs.topics {
		if ht.flight == nil && !now.Before(ht.due) && ctx.Err() == nil {
			r.launch(ctx, cl, hs, topic, ht)
		}
	}
}

// nextDue returns how long until the next held topic is due to be retried,
// and false when none waits to be.
func (hs *heldState) nextDue() (time.Duration, bool) {
	var next time.Time
	for _, ht := range hs.topics {
		if ht.flight == nil && (next.IsZero() || ht.due.Before(next)) {
			next = ht.due
		}
	}
	if next.IsZero() {
		return 0, false
	}
	return max(time.Until(next), 0), true
}

// launch reads the oldest held rows of topic and produces them, in order, in
// a goroutine of their own.
func (r *Relay) launch(ctx context.Context, cl *kgo.Client, hs *heldState, topic string, ht *heldTopic) {
	rows, err := r.readHeld(ctx, topic)
	if err != nil {
		r.m.errors.WithLabelValues(errKindRead).Inc()
		pause := ht.backoff.Next()
		r.cfg.Logger.Warn("relay: reading held rows failed", "topic", topic, "retry_in", pause.String(), "err", err)
		ht.due = time.Now().Add(wait.Jitter(pause))
		return
	}
	f := &flight{rows: rows, done: make(chan struct{})}
	ht.flight = f
	go func() {
		defer func() {
			close(f.done)
			select {
			case hs.landed <- struct{}{}:
			default:
			}
		}()
		if err := r.probe(ctx, cl, topic); err != nil {
			f.errs = make([]error, len(f.rows))
			for i := range f.errs {
				f.errs[i] = err
			}
			return
		}
		f.errs = r.publish(ctx, cl, f.rows, nil)
	}()
}

// probe asks the broker, by a metadata request of its own (no cache, no
// topic created), whether topic exists and this client may see it, before
// its held rows are produced. It returns the topic's error when it is a
// fault of the topic (isTopicScoped: UNKNOWN_TOPIC_OR_PARTITION,
// TOPIC_AUTHORIZATION_FAILED, ...), and nil when the rows may be produced:
// the topic is there, or the request failed otherwise (within the produce
// timeout), and producing will tell.
//
// Producing to a topic the broker does not know would not answer as much:
// the client keeps the records while it looks the topic up, and, once it
// has failed a topic that way, it looks it up again only at its slower
// metadata pace, so the retry would run out of its produce timeout and
// report "timeout" rather than the topic's fault. Probing first keeps the
// records of a topic known to be missing out of the client, which the
// other topics' batches share, and keeps the reason the broker gives.
func (r *Relay) probe(ctx context.Context, cl *kgo.Client, topic string) error {
	// ctx's own cancellation ends it: a drain does not wait for it, and
	// the rows stay held.
	pctx, cancel := context.WithTimeout(ctx, r.cfg.ProduceTimeout)
	defer cancel()
	// WithAuthorizedOps makes kadm ask the broker rather than its cache.
	md, err := kadm.NewClient(cl).Metadata(kadm.WithAuthorizedOps(pctx), topic)
	if err == nil {
		if td, ok := md.Topics[topic]; !ok {
			err = kerr.UnknownTopicOrPartition
		} else {
			err = td.Err
		}
	}
	if err != nil && isTopicScoped(err) {
		return err
	}
	// The topic is there, or the broker did not say (it is down, say):
	// producing tells, within the produce timeout.
	return nil
}

// readHeld returns the oldest held rows of topic, at most a batch.
func (r *Relay) readHeld(ctx context.Context, topic string) ([]txlog.Row[row], error) {
	rows, err := r.pool.Query(ctx, r.q.heldRead, r.cfg.Name, topic, r.cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(cr pgx.CollectableRow) (txlog.Row[row], error) {
		var rw txlog.Row[row]
		err := cr.Scan(&rw.Position.TxID, &rw.Position.Pos, &rw.Value.Topic, &rw.Value.Key,
			&rw.Value.Headers, &rw.Value.Payload, &rw.Value.CreatedAt)
		return rw, err
	})
}

// land handles a retry of topic the broker answered for: it deletes the
// acknowledged rows from outbox_held and moves the refused ones to
// outbox_rejected, fenced by the lease token; it releases the topic once
// none of its rows are held, and backs off when a row failed again.
func (r *Relay) land(ctx context.Context, l *lease, hs *heldState, topic string, ht *heldTopic, warned *retryWarnings) {
	f := ht.flight
	ht.flight = nil
	var (
		failed    error
		failedAt  txlog.Position
		rejected  []rejection
		remaining int
	)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	err := pgx.BeginFunc(sctx, r.pool, func(tx pgx.Tx) error {
		rejected = rejected[:0]
		if err := l.fence(hs.token)(sctx, tx); err != nil {
			return err
		}
		for i, rw := range f.rows {
			switch err := f.errs[i]; {
			case err == nil:
				if _, err := tx.Exec(sctx, r.q.heldDelete, r.cfg.Name, rw.Position.TxID, rw.Position.Pos); err != nil {
					return fmt.Errorf("relay: delete held row %s: %w", rw.Position, err)
				}
			case isRefusedForGood(err):
				if _, err := tx.Exec(sctx, r.q.heldReject, r.cfg.Name, rw.Position.TxID, rw.Position.Pos, err.Error(), r.cfg.Holder); err != nil {
					return fmt.Errorf("relay: move held row %s to outbox_rejected: %w", rw.Position, err)
				}
				rejected = append(rejected, rejection{pos: rw.Position, topic: topic, reason: err.Error()})
			}
		}
		return tx.QueryRow(sctx, r.q.heldCount, r.cfg.Name, topic).Scan(&remaining)
	})
	now := time.Now()
	if err != nil {
		if errors.Is(err, errLeaseLost) {
			r.m.errors.WithLabelValues(errKindFenced).Inc()
			l.lose(hs.token, "the held rows were fenced")
			return
		}
		// The acknowledged rows stay held and are published again.
		r.m.errors.WithLabelValues(errKindCheckpoint).Inc()
		pause := ht.backoff.Next()
		r.cfg.Logger.Warn("relay: saving the published held rows failed; they will be published again",
			"topic", topic, "retry_in", pause.String(), "err", err)
		ht.due = now.Add(wait.Jitter(pause))
		return
	}
	for _, rej := range rejected {
		r.m.rejected.Inc()
		r.cfg.Logger.Error("relay: the broker refused a held row for good; moved it to outbox_rejected",
			"position", rej.pos.String(), "topic", rej.topic, "reason", rej.reason)
	}
	for i, err := range f.errs {
		if err != nil && !isRefusedForGood(err) {
			failed, failedAt = err, f.rows[i].Position
			break
		}
	}
	ht.rows = remaining
	switch {
	case failed != nil:
		reason := retryReason(failed)
		ht.reason = reason
		r.m.publishRetries.WithLabelValues(topic, reason).Inc()
		r.m.errors.WithLabelValues(errKindProduce).Inc()
		r.m.topicHeld.WithLabelValues(topic).Set(float64(remaining))
		pause := ht.backoff.Next()
		if n, ok := warned.allow(topic, reason, now); ok {
			r.cfg.Logger.Warn("relay: topic held: publishing its held rows failed; retrying them with backoff, the other topics are published",
				"topic", topic, "reason", reason, "position", failedAt.String(), "held_rows", remaining,
				"retry_in", pause.String(), "retries_not_logged", n, "err", failed)
		}
		ht.due = now.Add(wait.Jitter(pause))
	case remaining == 0:
		delete(hs.topics, topic)
		r.m.topicHeld.DeleteLabelValues(topic)
		r.cfg.Logger.Info("relay: topic released: its held rows are published; its rows are published as read again",
			"topic", topic, "held_since", ht.since.UTC().Format(time.RFC3339))
	default:
		r.m.topicHeld.WithLabelValues(topic).Set(float64(remaining))
		ht.due = now
		ht.backoff.Reset()
	}
}

// settle waits for every retry in flight and lands it: at the end of a
// lease term (the fence refuses it then, and the next term publishes the
// rows again) and when the relay drains.
func (r *Relay) settle(ctx context.Context, l *lease, hs *heldState, warned *retryWarnings) {
	if hs == nil {
		return
	}
	for topic, ht := range hs.topics {
		if ht.flight != nil {
			<-ht.flight.done // publish returns within the produce timeout once ctx is done
			r.land(ctx, l, hs, topic, ht, warned)
		}
	}
}

// probeSuspects probes (see probe) each topic of rows that is in suspects
// and has rows publish would produce (skip reports the others), and returns
// the topics the broker does not take for now, with why: their rows are
// not produced, and fail with that error. A topic the relay failed to
// publish to is probed so because the Kafka client, once it failed a
// missing topic's records, looks the topic up again only at its slower
// metadata pace: produced again, the rows would wait for the produce
// timeout, stalling the batch, and fail as a timeout, which holds no topic.
func (r *Relay) probeSuspects(ctx context.Context, cl *kgo.Client, rows []txlog.Row[row], skip func(int) bool,
	suspects map[string]bool,
) map[string]error {
	var known map[string]error
	probed := map[string]bool{}
	for i, rw := range rows {
		t := rw.Value.Topic
		if !suspects[t] || probed[t] || skip(i) {
			continue
		}
		probed[t] = true
		if err := r.probe(ctx, cl, t); err != nil {
			if known == nil {
				known = map[string]error{}
			}
			known[t] = err
		}
	}
	return known
}

// noteSuspects records in suspects the topics whose rows failed in errs
// (publish's answer, probed topics included), other than for good, and
// forgets those whose rows were all acknowledged.
func noteSuspects(suspects map[string]bool, rows []txlog.Row[row], errs []error, skip func(int) bool) {
	failed := map[string]bool{}
	for i, rw := range rows {
		t := rw.Value.Topic
		if skip(i) {
			continue
		}
		if _, ok := failed[t]; !ok {
			failed[t] = false
		}
		if errs[i] != nil && !isRefusedForGood(errs[i]) {
			failed[t] = true
		}
	}
	for t, f := range failed {
		if f {
			suspects[t] = true
		} else {
			delete(suspects, t)
		}
	}
}

// heldSkip reports, for publish, which rows of a batch are not produced:
// those of held topics, and those acknowledged by an earlier attempt.
func heldSkip(rows []txlog.Row[row], hs *heldState, acked map[txlog.Position]struct{}) func(int) bool {
	return func(i int) bool {
		if _, ok := hs.topics[rows[i].Value.Topic]; ok {
			return true
		}
		_, ok := acked[rows[i].Position]
		return ok
	}
}

// healthState is the state Faults reports.
type healthState struct {
	healthMu sync.Mutex
	faults   []Fault
}

// heldBackoff is the backoff of a held topic's retries.
func (r *Relay) heldBackoff() wait.Doubling {
	return wait.Doubling{Min: minBackoff, Max: r.cfg.MaxBackoff}
}
