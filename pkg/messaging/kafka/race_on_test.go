//go:build race

package kafka_test

// raceEnabled says whether the tests run with the race detector.
const raceEnabled = true
