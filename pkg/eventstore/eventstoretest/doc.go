// Package eventstoretest is the conformance suite every eventstore.Store
// implementation must pass: appends with each kind of expected version and
// the conflicts they report, reads of a stream forward and backward, the
// global read in commit order, and concurrent appenders on one stream, each
// version won by exactly one of them and nothing lost.
//
// An implementation runs it from a test of its own package:
//
//	func TestConformance(t *testing.T) {
//		eventstoretest.Run(t, func(t *testing.T) eventstore.Store { return newEmptyStore(t) })
//	}
//
// The suite runs its tests in parallel, each on a Store of its own, and
// starts goroutines that it waits for before each test returns.
package eventstoretest
