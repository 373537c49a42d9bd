// Package pgtest gives tests a real PostgreSQL: a migrated schema of their
// own, a transaction rolled back at cleanup, or a whole throwaway server they
// may stop and start.
//
// # Where the database is
//
// URL returns $DTX_DATABASE_URL, or DefaultURL, the database of the
// development environment that `make deps` starts. NewSchema, Connect and Tx
// work in that database. NewCluster does not use it: it runs a server of its
// own from the PostgreSQL binaries installed on the machine.
//
// # Guarantees
//
//   - NewSchema's schema has a name no other test uses, holds every migration
//     of package migrations, and is dropped with everything in it at cleanup,
//     after its pool is closed. Its pool's connections have search_path set
//     to the schema, so code under test may use unqualified table names.
//   - Tx's transaction is rolled back at cleanup unless the test ended it.
//   - A Cluster keeps its port and data across Stop and Start; Stop returns
//     once the server has exited, Start once it accepts connections. Cleanup
//     stops it and removes its files.
//   - Nothing is shared between tests through package state: every helper
//     works from its testing.TB, so tests may run in parallel.
//
// # How it fails
//
// Every helper fails the test at once (t.Fatal) when it cannot do its job,
// with a message that names the server by host, port, user and database,
// never with the password, and says how to start the development services
// (`make deps`) or which variable to set. NewCluster skips the test when the
// PostgreSQL server binaries are not installed (or, as root, when there is
// no postgres OS user or no runuser), except when CI=true: there it fails,
// because CI must run every test. Set DTX_PG_BINDIR to the directory of
// initdb and pg_ctl if NewCluster does not find them. Cleanup reports a
// schema it could not drop as a test error.
package pgtest
