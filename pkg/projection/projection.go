package projection

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/eventstore"
)

// ErrUnhandledType is wrapped by the error of Handlers.Apply for an event
// type it has no function for. The Runner never asks a projection to apply
// such an event: it skips and counts it.
var ErrUnhandledType = errors.New("projection: unhandled event type")

// Projection turns events into a read model. Its Apply writes the effect of
// one event with the transaction it is given; the Runner saves the
// projection's checkpoint in that same transaction, so effects commit once.
type Projection interface {
	// Name names the projection's checkpoint (its reader in
	// txlog_checkpoints, log "events"). It must be stable across restarts
	// and unique among projections; 1 to 200 bytes.
	Name() string

	// Handles lists the event types Apply handles. Events of other types
	// are skipped and counted, never given to Apply. A list holding AllTypes
	// ("*") handles every type.
	Handles() []string

	// Apply writes the effect of ev with tx. It must not commit or roll
	// back tx. An error rolls back the whole batch, effects and checkpoint,
	// and the batch is retried. Apply may run more than once for an event
	// whose batch was rolled back, but its effects commit once.
	Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error
}

// RebuildableProjection is a Projection whose read model can be rebuilt
// from the beginning of the event log into shadow tables while the live
// projection goes on, then swapped in (see Runner.Rebuild).
type RebuildableProjection interface {
	Projection

	// Tables names the tables Apply writes, each a table name or
	// "schema.table". Rebuild creates one shadow table per table, named
	// by appending ShadowSuffix, with CREATE TABLE ... (LIKE ... INCLUDING
	// ALL), and finally replaces each table by its shadow. At least one.
	Tables() []string

	// Shadow returns the projection writing to the shadow tables: the
	// same events, the same effects, but on the tables named Tables()
	// with suffix appended.
	Shadow(suffix string) Projection
}

// ApplyFunc writes the effect of one event with tx; see Projection.Apply.
type ApplyFunc func(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error

// Handlers is a Projection made of one ApplyFunc per event type.
type Handlers struct {
	// ProjectionName is returned by Name. Required.
	ProjectionName string

	// Funcs maps event types to the function that applies them. The types
	// are what Handles returns.
	Funcs map[string]ApplyFunc
}

var _ Projection = Handlers{}

// Name returns h.ProjectionName.
func (h Handlers) Name() string { return h.ProjectionName }

// Handles returns the keys of h.Funcs, sorted.
func (h Handlers) Handles() []string {
	types := make([]string, 0, len(h.Funcs))
	for t := range h.Funcs {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

// Apply calls the function of ev.Type, or fails with an error wrapping
// ErrUnhandledType when there is none.
func (h Handlers) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	f := h.Funcs[ev.Type]
	if f == nil {
		return fmt.Errorf("%w: %q in projection %q", ErrUnhandledType, ev.Type, h.ProjectionName)
	}
	return f(ctx, tx, ev)
}
