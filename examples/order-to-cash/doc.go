// Command example-o2c runs the Order-to-Cash example: the saga of
// sagas/order-to-cash.yaml run end to end by the dtx binaries and four
// example services.
//
// When sales places an order (sales.order.placed on sales.events, written
// through the outbox with the order), the orchestrator starts a saga with
// the order id as saga id: reserve the stock (inventory), charge the payment
// (accounting), schedule the delivery (delivery), confirm the order (sales).
// A business failure compensates what was done, in reverse order.
//
// Subcommands:
//
//   - participants runs the four services, each a saga participant
//     (pkg/saga/participant) behind a Watermill router on dtx's Kafka
//     subscriber (consumer group "example-o2c-<service>") with dtx's
//     middleware stack (dead letters to "<topic>.dlq"). It creates the
//     saga's topics and the services' tables (schema example_o2c) if they
//     do not exist and seeds the stock. --only runs some of them, --slow
//     delays every command. Sales also consumes the orchestrator's
//     lifecycle events (dtx.saga.events, consumer group
//     "example-o2c-sales-outcomes"), choreography after the orchestration:
//     when an order-to-cash saga compensated (dtx.saga.compensated), it
//     cancels the order through the aggregate, appending
//     sales.order.cancelled with the saga's reason to the order's stream in
//     one transaction, with the event's correlation and trace. A
//     redelivered event appends nothing; an order without stream (placed
//     by place) is left as it is; a confirmed order is refused
//     (dead-lettered and logged). Other lifecycle events are ignored.
//   - place places orders: each transaction inserts orders and writes their
//     sales.order.placed events to the outbox. Every --sold-out-every,
//     --decline-every and --fail-delivery-every-th order fails at the
//     reservation (a SOLD-OUT line), the payment (a "cus-declined..."
//     customer) or the delivery (a shipping address in Antarctica, "AQ").
//   - report waits until every saga of a run has ended, prints the sagas by
//     status and the services' net effects, and exits 1 unless the
//     invariants hold: every saga terminal; a completed saga's stock
//     reserved, payment charged, shipment scheduled and order confirmed,
//     each once; a compensated saga's stock and payment back to zero and no
//     active shipment; no effect recorded twice in the services' ledger.
//   - sales-api serves sales as an event-sourced Order aggregate
//     (pkg/eventstore) behind HTTP (--addr, 127.0.0.1:8095 by default),
//     wrapped in middleware.HTTP (correlation id, trace). POST /orders
//     requires an Idempotency-Key, kept per caller (the Authorization
//     header): the handler dispatches sales.order.place on a pkg/cqrs
//     command bus in the request's transaction, and the aggregate appends
//     sales.order.placed to the stream of the order id (stream type
//     sales.order), whose outbox record goes to the saga's trigger topic
//     (--topic) with the trigger's schema; it answers 201 with the order id
//     and a Location. A retry with the key replays the first answer; the
//     same order id under another key is refused with 409. GET /orders/{id}
//     runs a query on the cqrs query bus: the order's status (placed,
//     confirmed, cancelled) from the order-status read model, a projection
//     (pkg/projection) of the aggregate's events that the subcommand keeps
//     up to date, and the saga with its timeline (orchestrator.Show). The
//     sales participant confirms such orders through the aggregate
//     (sales.order.confirmed appended to the order's stream) and cancels
//     them when their saga compensated, so GET shows a compensated order
//     as cancelled; a cancelled order is never confirmed (the command is
//     dead-lettered).
//   - shop is a client of sales-api (--api): it places --orders orders with
//     POST /orders (ok, declined, sold-out and undeliverable in turn), each
//     with its own Idempotency-Key and a new sampled W3C trace, sends the
//     first request again with the same key (the stored answer must come
//     back, Idempotent-Replayed: true), reads every order with
//     GET /orders/{id} until its saga has ended, prints them with their
//     sagas' timelines and the first order's trace id, and exits 1 unless
//     each ended as its scenario says (completed and confirmed, or
//     compensated and cancelled).
//
// place, sales-api and shop follow the standard OTEL_* variables
// (pkg/telemetry): place writes each transaction in a span, so its events
// carry trace context, like everything sales-api writes.
//
// Every handler records what it did in the ledger table, in the
// transaction of its effect, under a unique (service, saga, step, phase):
// that is what shows each step's effect happened once.
//
// For brevity the four services share one database and reply through the
// outbox of the dtx schema, published by the running outbox-relay. A real
// service would have its own database with its own dtx schema (barrier and
// outbox) and its own relay.
//
// # Compensation replies
//
// A compensation's success reply names the order, what was undone when the
// command names it, and when; the same reply is built from the command when
// there was nothing to undo (participant.ReplyDataFunc), so that it follows
// the reply's schema either way.
//
// # How it fails
//
// A command that cannot be handled for good (bad payload, unknown order)
// is dead-lettered, and its saga times out and compensates. Database
// errors roll the command's transaction back and are retried by the
// middleware. report exits 1 naming the first broken invariant and lists
// the others.
//
// It reads DTX_DATABASE_URL, DTX_KAFKA_BROKERS, DTX_SCHEMA (default dtx)
// and DTX_EXAMPLE_SCHEMA (default example_o2c); `make demo` runs it.
package main
