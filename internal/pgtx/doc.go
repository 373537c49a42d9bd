// Package pgtx holds what dtx's packages do with a pgx transaction they
// began: end it without committing, whatever state the caller's context is
// in.
//
// # Guarantees
//
// Rollback runs even when the context it is given has ended (a cancelled
// request, a drain), within EndTimeout, so a connection goes back to its pool
// without the transaction it held.
//
// # How it fails
//
// A rollback that fails is not reported: the server rolls back a
// transaction whose connection breaks, and pgx closes a connection whose
// rollback failed rather than reuse it.
package pgtx
