package participant_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/migrate"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/participant"
)

func ExampleParticipant() {
	ctx := context.Background()
	pool, schema, cleanup, err := exampleDatabase(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()

	ob, err := outbox.New(outbox.Config{Schema: schema})
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := participant.New(pool, participant.Config{Name: "payments", Schema: schema, Outbox: ob})
	if err != nil {
		fmt.Println(err)
		return
	}
	p.Action("payments.charge", func(ctx context.Context, tx pgx.Tx, cmd participant.Command) (participant.Reply, error) {
		var in struct{ Amount int }
		if err := json.Unmarshal(cmd.Data, &in); err != nil {
			return participant.Reply{}, messaging.Permanent(err)
		}
		if in.Amount > 100 {
			return participant.Reply{}, participant.Reject("payments.charge_declined", map[string]string{"reason": "limit"})
		}
		_, err := tx.Exec(ctx, "INSERT INTO charges (saga_id, amount) VALUES ($1, $2)", cmd.SagaID, in.Amount)
		return participant.Reply{Type: "payments.charged", Data: in}, err
	})
	p.Compensation("payments.refund", "payments.refunded", func(ctx context.Context, tx pgx.Tx, cmd participant.Command) (any, error) {
		_, err := tx.Exec(ctx, "DELETE FROM charges WHERE saga_id = $1", cmd.SagaID)
		return map[string]string{"refunded": cmd.SagaID}, err
	}, func(cmd participant.Command) any {
		return map[string]string{"refunded": cmd.SagaID, "note": "nothing was charged"}
	})

	// Commands as the orchestrator sends them; in a service, a router
	// delivers them to p.Handle.
	send := func(typ, sagaID string, phase saga.Phase, amount int) {
		env, _ := messaging.NewEnvelope(typ, "/orchestrator", map[string]int{"amount": amount})
		env.SagaID, env.PartitionKey = sagaID, sagaID
		env.Extensions = map[string]string{"sagastep": "charge", "sagaattempt": "1", "sagaphase": string(phase)}
		msg, _ := env.ToMessage()
		if err := p.Handle(msg); err != nil {
			fmt.Println(err)
		}
		if err := p.Handle(msg); err != nil { // a redelivery changes nothing
			fmt.Println(err)
		}
	}
	send("payments.charge", "saga-1", saga.PhaseAction, 40)
	send("payments.charge", "saga-2", saga.PhaseAction, 400)
	send("payments.refund", "saga-1", saga.PhaseCompensation, 0)
	send("payments.refund", "saga-3", saga.PhaseCompensation, 0) // before its action
	send("payments.charge", "saga-3", saga.PhaseAction, 10)      // refused: no reply

	rows, _ := pool.Query(ctx, "SELECT key, headers->>'ce_type', headers->>'ce_sagaphase' FROM outbox ORDER BY tx_id, position")
	replies, _ := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ Key, Type, Phase string }])
	for _, r := range replies {
		fmt.Println(r.Key, r.Type, r.Phase)
	}
	var charges int
	_ = pool.QueryRow(ctx, "SELECT count(*) FROM charges").Scan(&charges)
	fmt.Println("charges:", charges)
	// Output:
	// saga-1 payments.charged action
	// saga-2 payments.charge_declined action
	// saga-1 payments.refunded compensation
	// saga-3 payments.refunded compensation
	// charges: 0
}

// exampleDatabase gives the example a schema of its own in the database
// named by DTX_DATABASE_URL (the development database when unset): a fresh
// name, dtx's tables migrated into it, and the example's own tables. The
// pool's connections use the schema as their search_path; cleanup drops the
// schema and closes the pool.
func exampleDatabase(ctx context.Context) (*pgxpool.Pool, string, func(), error) {
	db, err := migrate.NewTempSchema(ctx, os.Getenv("DTX_DATABASE_URL"), "example_")
	if err != nil {
		return nil, "", nil, err
	}
	pool, schema := db.Pool, db.Name
	cleanup := func() { _ = db.Close(context.WithoutCancel(ctx)) }
	if _, err := pool.Exec(ctx, "CREATE TABLE charges (saga_id text PRIMARY KEY, amount int NOT NULL)"); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return pool, schema, cleanup, nil
}
