package main

import "github.com/vextrus/dtx/internal/service"

const summary = `orchestrator runs dtx sagas: it consumes saga start commands, trigger events and
participant replies from Kafka and, per message, commits the saga's new state, the
next commands (through the outbox) and the message's deduplication record in one
PostgreSQL transaction. A scheduler fires step timeouts and retries; several replicas
may run at once.

This build serves its admin endpoints and applies migrations; the saga work loop is
not part of it yet.`

func main() {
	service.Main(service.App{
		Name:             "orchestrator",
		Summary:          summary,
		DefaultAdminAddr: ":8081",
		RunFunc:          service.Idle("saga router and scheduler"),
	})
}
