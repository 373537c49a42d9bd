// Package sweep deletes expired rows of a dtx table in bounded batches, at
// once and then periodically, in a goroutine it owns.
//
// A sweep runs one batch statement after another, each committing on its
// own, until a batch deletes fewer rows than the batch size, so locks are held
// briefly and a long backlog does not become one huge transaction. A failed
// sweep is logged and retried at the next interval: a database outage never
// ends the sweeper. Several replicas may sweep the same table at once when
// their batch statements skip locked rows.
package sweep
