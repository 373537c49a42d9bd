// Package kafkatest gives tests a real Kafka cluster: clients closed at
// cleanup and topics of their own, deleted at cleanup.
//
// # Where the cluster is
//
// Brokers returns the seed brokers of $DTX_KAFKA_BROKERS (comma-separated
// host:port), or DefaultBrokers, the broker of the development environment
// that `make deps` starts.
//
// # Guarantees
//
//   - NewTopic's topic has a name no other test uses (the test's name and 16
//     random hex digits), replication factor 1, and every partition has a
//     leader that answers when NewTopic returns, so a test may produce at
//     once without retrying unknown-topic errors. It is deleted at cleanup.
//   - NewClient's client has answered a ping when NewClient returns and is
//     closed at cleanup; closing stops all of its goroutines.
//   - Nothing is shared between tests through package state, so tests may run
//     in parallel.
//   - StartBroker runs a private Apache Kafka broker (KRaft, single node, free
//     ports) from the jars `make deps` cached in .dev/kafka/libs (or
//     DTX_KAFKA_LIBS), for fault tests that stop and restart the broker
//     without disturbing the shared one. Without the jars or Java it skips
//     the test, except under CI=true, where it fails it. WithSCRAMUser adds a
//     SASL_PLAINTEXT listener (SCRAM-SHA-256 and -512) with that user, and
//     WithAuthorizer turns on the KRaft StandardAuthorizer, with only the
//     plaintext listener's principal (ANONYMOUS) a super user, for tests of
//     missing ACLs.
//
// # How it fails
//
// Every helper fails the test at once (t.Fatal) when it cannot do its job;
// when the cluster does not answer within 15 seconds the message names the
// brokers and says how to start the development services (`make deps`) or
// which variable to set. A topic that cannot be deleted at cleanup is
// reported as a test error; one already deleted by the test is not.
package kafkatest
