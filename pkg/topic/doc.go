// Package topic provisions the Kafka topics of a dtx deployment as code:
// specs (name, partitions, replication factor, configs) read from topics
// files and derived from saga definitions, a plan that compares them with
// the cluster, an apply that creates what is missing, and a check that
// binaries use at start to report a missing topic.
//
// dtx never relies on the broker creating topics on first use: a topic
// created that way gets the broker's defaults, and a consumer that starts
// before it exists waits without a word. Run `dtxctl topics plan` to see
// what would change and `dtxctl topics apply` to create what is missing;
// binaries report a missing topic on /readyz until it exists (or create it
// at start with --create-topics).
//
// # Topics files
//
// A topics file lists the topics a deployment needs besides those derived
// from its saga definitions (its services' own event and command topics,
// their dead-letter topics), and may give settings to derived ones:
//
//	# Optional: settings for every topic of this file that does not set its own.
//	defaults:
//	  partitions: 6              # >= 1, or -1 for the broker's num.partitions
//	  replication_factor: 3      # >= 1, or -1 for the broker's default.replication.factor
//	  configs:                   # topic configs by their Kafka name
//	    min.insync.replicas: 2
//	topics:
//	  - name: sales.events       # required; [a-zA-Z0-9._-], at most 249 characters
//	  - name: sales.orders
//	    partitions: 12
//	    configs:
//	      retention.ms: 604800000
//	      cleanup.policy: delete
//
// Unknown keys, a topic listed twice, a partition count or replication
// factor of 0 and a config value that is not a scalar are errors naming the
// file and the line. What neither the topic nor the file's defaults set is
// filled by Defaults (the --partitions and --replication-factor of dtxctl):
// DefaultPartitions (3) and DefaultReplicationFactor (-1, the broker's
// default), which work on a one-broker development cluster.
// examples/order-to-cash/topics.yaml is a commented example.
//
// # Topics of sagas
//
// ForSagas derives what an orchestrator running a set of definitions needs:
// the reply topic and every trigger topic (which it consumes), every action
// and compensation command topic and the lifecycle event topic (which it
// writes to through the outbox), and "<topic>.dlq" for each topic it
// consumes (dead letters). The reply and event topics are
// saga.DefaultReplyTopic and saga.DefaultEventTopic behind an optional
// prefix. Merge combines these with the specs of topics files: a file may
// give a derived topic its settings; two sources that set one field to
// different values are an error naming both.
//
// # Guarantees
//
//   - Plan changes nothing. It lists every spec exactly once: to create,
//     matching, or drifted with each differing field (partitions fewer or
//     more than wanted, another replication factor, a config whose value
//     differs).
//   - Apply creates only topics that do not exist, so applying the same
//     specs twice creates nothing the second time, and a topic created
//     concurrently by another client counts as existing. It never deletes
//     a topic, adds partitions or alters configs: drift is reported, never
//     silently changed. When it returns without error, every topic it
//     created has a leader for each partition.
//   - Missing and Require only read the cluster's metadata; they never
//     create a topic (the metadata request does not allow auto-creation).
//
// # How it fails
//
//   - A topics file that cannot be read or parsed returns *FileError values
//     naming the file and line; nothing is applied.
//   - A spec that is invalid (bad name, partitions below -1) fails Plan and
//     Apply before anything is created, naming the topic and field.
//   - A topic the cluster refuses to create (not authorised, replication
//     factor above the number of brokers, unknown config) fails Apply with
//     the broker's error naming the topic; the topics created before it
//     stay created and are listed in Report.Created, so running Apply again
//     after the fix completes the set.
//   - Config values are compared as the broker reports them: write them as
//     the broker does (e.g. "604800000" for retention.ms, not "7d"), or they
//     show as drift. Only the configs a spec lists are compared.
package topic
