package orchestrator

// LockKey is lockKey, for tests that hold a saga's advisory lock.
var LockKey = lockKey
