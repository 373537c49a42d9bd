// Command outbox is a runnable example of the transactional outbox: it places
// orders in PostgreSQL transactions, each transaction writing the order row
// and its sales.order.placed event through pkg/messaging/outbox, and watches
// the events arrive on Kafka, published by a running outbox-relay. It prints
// a progress line while it waits and exits 0 once every event of its run is on
// Kafka, non-zero if they are not within --timeout.
//
// Its topic, sales.orders, must exist: `dtxctl topics apply --file
// examples/order-to-cash/topics.yaml` creates it. Before writing, it notes
// the end offset of each partition of the topic and consumes from there, so
// it sees every event of its run however late its consumer starts.
//
// It reads DTX_DATABASE_URL, DTX_KAFKA_BROKERS and DTX_SCHEMA like the dtx
// binaries; `make demo` runs it against the relay it started.
package main
