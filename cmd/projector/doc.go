// Command projector builds read models from dtx events, committing each update with
// its checkpoint in one PostgreSQL transaction. It shares its configuration, admin
// endpoints and lifecycle with every dtx binary (see internal/service); run it with
// --help for its settings.
package main
