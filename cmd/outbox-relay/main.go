package main

import "github.com/vextrus/dtx/internal/service"

const summary = `outbox-relay publishes the transactional outbox to Kafka: it tails the outbox log in
PostgreSQL in commit order, produces each batch with an idempotent producer (acks=all),
and advances its checkpoint only once the broker acknowledged the batch. Woken by
LISTEN/NOTIFY with a polling fallback; per-key order; several replicas may run, fenced
by a lease.

This build serves its admin endpoints and applies migrations; the relay loop is not
part of it yet.`

func main() {
	service.Main(service.App{
		Name:             "outbox-relay",
		Summary:          summary,
		DefaultAdminAddr: ":8082",
		RunFunc:          service.Idle("outbox relay loop"),
	})
}
