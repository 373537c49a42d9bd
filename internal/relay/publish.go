package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/vextrus/dtx/internal/txlog"
)

// row is one outbox row as the relay reads it.
type row struct {
	Topic     string
	Key       *string
	Headers   []byte // the jsonb object, as JSON text
	Payload   []byte
	CreatedAt time.Time
}

// rowColumns are the outbox columns the relay reads, in rowDest's order.
var rowColumns = []string{"topic", "key", "headers", "payload", "created_at"}

func rowDest(r *row) []any {
	return []any{&r.Topic, &r.Key, &r.Headers, &r.Payload, &r.CreatedAt}
}

// record builds a row's Kafka record: its topic, key (nil when the row has
// none), headers sorted by name, payload as the value, and the row's
// created_at as its timestamp (so that the relay host's clock, which the
// client would use otherwise, decides nothing). It fails only for
// headers that are not a JSON object of strings, which can never be
// published: the row is rejected.
func record(r *row) (*kgo.Record, error) {
	rec := &kgo.Record{Topic: r.Topic, Value: r.Payload, Timestamp: r.CreatedAt}
	if rec.Value == nil {
		rec.Value = []byte{}
	}
	if r.Key != nil {
		rec.Key = []byte(*r.Key)
	}
	var hs map[string]string
	if err := json.Unmarshal(r.Headers, &hs); err != nil {
		return nil, fmt.Errorf("headers are not a JSON object of strings: %w", err)
	}
	if len(hs) > 0 {
		rec.Headers = make([]kgo.RecordHeader, 0, len(hs))
		for k, v := range hs {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		slices.SortFunc(rec.Headers, func(a, b kgo.RecordHeader) int { return strings.Compare(a.Key, b.Key) })
	}
	return rec, nil
}

// refusedForGood lists the broker's answers that are faults of the record
// itself, so that it will never be accepted as it is: too large, corrupt,
// invalid, or produced to a topic name Kafka does not allow (the row's topic
// column). The row is moved to outbox_rejected. Every other error, however
// final the broker calls it, is the environment's fault (the clock the
// broker checks timestamps against, authorization of the topic or the
// cluster, a topic that does not exist, a leader that moved, a policy,
// unsupported versions, ...): it is retried with backoff, so that a clock
// jump or a misconfiguration never sets a topic's rows aside nor breaks
// their order.
var refusedForGood = []*kerr.Error{
	kerr.MessageTooLarge,
	kerr.RecordListTooLarge,
	kerr.InvalidTopicException,
	kerr.InvalidRecord,
	kerr.CorruptMessage,
}

// retryReason names err for dtx_relay_publish_retries_total and the retry
// warning: the Kafka error's name (INVALID_TIMESTAMP,
// TOPIC_AUTHORIZATION_FAILED, ...), "timeout" for a record the broker did
// not answer in time, or "other".
func retryReason(err error) string {
	if ue, ok := errors.AsType[*unsortedError](err); ok {
		err = ue.err
	}
	if ke, ok := errors.AsType[*kerr.Error](err); ok {
		return ke.Message
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrRecordTimeout) || errors.Is(err, errUnanswered) {
		return "timeout"
	}
	return "other"
}

// isRefusedForGood reports whether err is the broker's final refusal of a
// record (see refusedForGood), or a row that cannot become a record.
func isRefusedForGood(err error) bool {
	if _, ok := errors.AsType[*badRowError](err); ok {
		return true
	}
	ke, ok := errors.AsType[*kerr.Error](err)
	return ok && slices.Contains(refusedForGood, ke)
}

// badRowError is a row that cannot become a Kafka record.
type badRowError struct{ err error }

func (e *badRowError) Error() string { return e.err.Error() }
func (e *badRowError) Unwrap() error { return e.err }

// topicScoped lists the broker's answers that are faults of one topic's
// environment, not of the record nor of the whole broker: the topic does
// not exist (and is not created automatically), the relay may not write
// it, or a policy refuses it. Such a topic is held (see held.go) when other
// topics show that the broker is otherwise well.
var topicScoped = []*kerr.Error{
	kerr.UnknownTopicOrPartition,
	kerr.UnknownTopicID,
	kerr.TopicAuthorizationFailed,
	kerr.PolicyViolation,
}

// isTopicScoped reports whether err is a fault of one topic's environment
// (see topicScoped).
func isTopicScoped(err error) bool {
	ke, ok := errors.AsType[*kerr.Error](err)
	return ok && slices.Contains(topicScoped, ke)
}

// isClientStale reports whether err is an answer the Kafka client keeps:
// CLUSTER_AUTHORIZATION_FAILED, which the broker gives to a producer-id
// request of a principal that may write no topic yet (an ACL granted in
// steps: DESCRIBE before WRITE). franz-go keeps a refused producer id as
// the client's for good, failing every later record with it, so the relay
// replaces the client before it retries; the fault itself is one of the
// environment, retried with backoff like any other.
func isClientStale(err error) bool {
	return errors.Is(err, kerr.ClusterAuthorizationFailed)
}

// unsortedError is a final refusal that may not be the record's own: the
// record shared a partition, or a record batch, with a refused one, and the
// relay could not tell them apart (it was draining, or an earlier row of
// its topic failed otherwise). It is retried, never rejected.
type unsortedError struct{ err error }

func (e *unsortedError) Error() string {
	return "refused, perhaps for another record of its partition: " + e.err.Error()
}

// rejection is a row the relay sets aside, with why.
type rejection struct {
	pos    txlog.Position
	topic  string
	reason string
}

// publish produces the rows of a batch, except those skip reports (nil:
// none), and waits for the broker; it returns each row's error, nil for a
// row acknowledged or skipped. All rows are produced at once first; if a
// record is refused for good, the failed rows are produced again one at a
// time and in order, to tell the refused rows from the ones that merely
// shared a partition, or a record batch, with them (franz-go fails every
// record buffered behind a failed batch of a partition, so each partition's
// accepted records are a prefix of what was produced to it: re-producing
// the failed ones in order keeps per-key order). In that second pass, a row
// that fails for another reason stops its topic: the topic's later rows
// keep their first error, so that no row of a key overtakes an earlier one.
// A final refusal that was not sorted out so is returned as an
// unsortedError, which isRefusedForGood does not match.
//
// Once ctx is done, publish waits at most the produce timeout more, and
// does not sort out refusals.
func (r *Relay) publish(ctx context.Context, cl *kgo.Client, rows []txlog.Row[row], skip func(i int) bool) []error {
	recs := make([]*kgo.Record, len(rows))
	bad := make([]error, len(rows))
	for i := range rows {
		if skip != nil && skip(i) {
			continue
		}
		rec, err := record(&rows[i].Value)
		if err != nil {
			bad[i] = &badRowError{err: err}
			continue
		}
		recs[i] = rec
	}
	errs := r.produce(ctx, cl, rows, recs)
	for i, err := range bad {
		if err != nil {
			errs[i] = err
		}
	}
	first := slices.IndexFunc(errs, isRefusedForGood)
	if first < 0 {
		return errs
	}
	stopped := map[string]bool{}
	for i := first; i < len(rows); i++ {
		if errs[i] == nil {
			continue
		}
		topic := rows[i].Value.Topic
		if stopped[topic] || ctx.Err() != nil {
			errs[i] = unsorted(errs[i])
			continue
		}
		if recs[i] != nil {
			errs[i] = r.produce(ctx, cl, rows[i:i+1], recs[i:i+1])[0]
		}
		if errs[i] != nil && (!isRefusedForGood(errs[i]) || ctx.Err() != nil) {
			errs[i] = unsorted(errs[i])
			stopped[topic] = true
		}
	}
	return errs
}

// unsorted wraps err in an unsortedError if it is the broker's final
// refusal (a row that cannot become a record is its own fault alone).
func unsorted(err error) error {
	if _, ok := errors.AsType[*badRowError](err); !ok && isRefusedForGood(err) {
		return &unsortedError{err: err}
	}
	return err
}

// produce produces recs (nil entries are skipped) and returns each one's
// error once the broker answered for all, or the produce timeout passed
// (context.DeadlineExceeded). When ctx is done it waits at most the produce
// timeout more; records still unanswered then count as failed. A record
// whose headers carry a sampled trace context is produced in a span (see
// startSpan), ended by its answer.
func (r *Relay) produce(ctx context.Context, cl *kgo.Client, rows []txlog.Row[row], recs []*kgo.Record) []error {
	var (
		mu       sync.Mutex
		errs     = make([]error, len(recs))
		answered = make([]bool, len(recs))
		pending  = 0
		done     = make(chan struct{})
	)
	for _, rec := range recs {
		if rec != nil {
			pending++
		}
	}
	if pending == 0 {
		return errs
	}
	// Not ctx: a record handed to the client is finished (acknowledged,
	// refused or timed out) even while the relay drains. The deadline is
	// the records' delivery timeout: franz-go's RecordDeliveryTimeout
	// counts from a record's timestamp, which is the row's created_at, and
	// would fail at once any row older than ProduceTimeout.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ProduceTimeout)
	defer cancel()
	for i, rec := range recs {
		if rec == nil {
			continue
		}
		created := rows[i].Value.CreatedAt
		// franz-go keeps a record's Context once set, and fails the record
		// when it is done: a record produced again needs this call's.
		rec.Context = pctx
		var span trace.Span
		if r.tracer != nil {
			span = r.startSpan(pctx, rec)
		}
		cl.Produce(pctx, rec, func(_ *kgo.Record, err error) {
			if span != nil {
				endSpan(span, rec, err)
			}
			if err == nil {
				r.m.published.Inc()
				r.m.commitToAck.Observe(max(time.Since(created).Seconds(), 0))
			} else if isClientStale(err) {
				r.clientStale.Store(true)
			}
			mu.Lock()
			defer mu.Unlock()
			errs[i], answered[i] = err, true
			if pending--; pending == 0 {
				close(done)
			}
		})
	}
	select {
	case <-done:
	case <-ctx.Done():
		t := time.NewTimer(r.cfg.ProduceTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		}
	}
	mu.Lock()
	defer mu.Unlock()
	out := slices.Clone(errs)
	for i, rec := range recs {
		if rec != nil && !answered[i] {
			out[i] = errUnanswered
		}
	}
	return out
}

// errUnanswered marks a record the broker had not answered for when a drain
// stopped waiting.
var errUnanswered = errors.New("relay: no answer from the broker before the drain ended")
