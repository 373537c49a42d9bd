// Command billing is a service of its own that takes part in dtx sagas,
// written only against dtx's public packages: the example that
// docs/getting-started.md builds step by step.
//
// It serves POST /invoices behind the Idempotency-Key middleware: one
// transaction records the invoice request and writes the trigger event
// billing.invoice.requested to the outbox, which the outbox-relay publishes
// to billing.events. The request and the trigger event (against its schema)
// are checked before anything is written: a refusal answers 422 with nothing
// recorded, and a failure after a write answers 500, which rolls the
// transaction back (the middleware commits any answer below 500).
//
// The orchestrator, running sagas/billing-invoice.yaml with --schemas
// contracts, starts the billing-invoice saga from the event and sends
// commands to the service's two participants: credit (reserve and release
// credit) and invoicing (issue and void the invoice). A customer
// whose id starts with "blocked-" cannot be invoiced, so that saga releases
// the credit and ends Compensated. An amount over 1,000,000 cents is over
// the credit limit: the first step fails and the saga ends Compensated
// with nothing to undo.
//
// Downstream, the service follows the saga lifecycle events (dtx.saga.*)
// twice: in a Watermill router handler behind dtx's middleware, which also
// moves the invoice's status along, and in a plain franz-go consumer that
// decodes records with kafka.DecodeRecord. Both record what they see;
// GET /invoices/{id} shows the invoice with the lifecycle events each saw.
//
// Usage:
//
//	billing [--migrate] [--http-addr :8090] [--topic-prefix P] ...
//
// Run billing --help for every flag. Each flag --some-name is also the
// environment variable BILLING_SOME_NAME; --database-url, --kafka-brokers
// and --schema fall back to DTX_DATABASE_URL, DTX_KAFKA_BROKERS and
// DTX_SCHEMA. It logs JSON on standard error and stops on SIGTERM or
// SIGINT: it stops taking requests and messages, finishes those in flight
// and exits 0.
package main
