package main

import "github.com/vextrus/dtx/internal/service"

const summary = `projector builds read models from dtx events: it consumes events from Kafka (or reads
the event store's global log when catching up or rebuilding) and updates read models
with its checkpoint in the same PostgreSQL transaction, so each event takes effect once.

This build serves its admin endpoints and applies migrations; the projection loop is
not part of it yet.`

func main() {
	service.Main(service.App{
		Name:             "projector",
		Summary:          summary,
		DefaultAdminAddr: ":8083",
		RunFunc:          service.Idle("projection loop"),
	})
}
