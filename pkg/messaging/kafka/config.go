package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Defaults of the Config fields.
const (
	// DefaultClientID is the client id sent to the brokers when
	// ClientConfig.ClientID is empty.
	DefaultClientID = "dtx"
	// DefaultDeliveryTimeout bounds how long a record may take to be
	// acknowledged when PublisherConfig.DeliveryTimeout is zero. It is the
	// default of the Java client's delivery.timeout.ms.
	DefaultDeliveryTimeout = 2 * time.Minute
	// DefaultNackResendDelay is how long a subscriber waits before
	// redelivering a nacked message when SubscriberConfig.NackResendDelay is
	// zero.
	DefaultNackResendDelay = 100 * time.Millisecond
	// DefaultReadAheadPerPartition is SubscriberConfig.ReadAheadPerPartition
	// when it is zero.
	DefaultReadAheadPerPartition = 1000
	// DefaultCommitInterval is SubscriberConfig.CommitInterval when it is
	// zero; it is the default of the Java client's auto.commit.interval.ms.
	DefaultCommitInterval = 5 * time.Second
	// DefaultCommitTimeout is SubscriberConfig.CommitTimeout when it is zero.
	DefaultCommitTimeout = 10 * time.Second
)

// Limits of the Config fields.
const (
	maxInFlightPerPartition  = 10_000
	maxReadAheadPerPartition = 1_000_000
	minCommitInterval        = 10 * time.Millisecond
)

// NoDelay is a SubscriberConfig.NackResendDelay that delivers nacked
// messages again at once. Any negative duration means the same.
const NoDelay time.Duration = -1

// SASLMechanism names a SASL mechanism a client authenticates with.
type SASLMechanism string

// The SASL mechanisms this package configures. Others (OAUTHBEARER, AWS IAM)
// can be set with ClientConfig.Opts and kgo.SASL.
const (
	SASLPlain       SASLMechanism = "PLAIN"
	SASLScramSHA256 SASLMechanism = "SCRAM-SHA-256"
	SASLScramSHA512 SASLMechanism = "SCRAM-SHA-512"
)

// SASLConfig is how a client authenticates to the brokers. Its String method
// hides the password, so a logged or printed Config does not leak it.
type SASLConfig struct {
	// Mechanism is SASLPlain, SASLScramSHA256 or SASLScramSHA512. Defaults to
	// "": no SASL authentication, and User and Password must be empty.
	Mechanism SASLMechanism
	// User is the user name. Required when Mechanism is set.
	User string
	// Password is the user's password. Required when Mechanism is set.
	Password string
}

// String describes c without its password.
func (c SASLConfig) String() string {
	if c.Mechanism == "" && c.User == "" && c.Password == "" {
		return "{}"
	}
	pass := ""
	if c.Password != "" {
		pass = "<redacted>"
	}
	return fmt.Sprintf("{Mechanism:%s User:%s Password:%s}", c.Mechanism, c.User, pass)
}

// GoString is String, so %#v does not print the password either.
func (c SASLConfig) GoString() string { return "kafka.SASLConfig" + c.String() }

func (c SASLConfig) validate(prefix string) error {
	var errs []error
	switch c.Mechanism {
	case "":
		if c.User != "" || c.Password != "" {
			errs = append(errs, fmt.Errorf("%s.SASL.Mechanism is empty but a user or password is set: name the mechanism (%s, %s or %s)",
				prefix, SASLPlain, SASLScramSHA256, SASLScramSHA512))
		}
		return errors.Join(errs...)
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
	default:
		errs = append(errs, fmt.Errorf("%s.SASL.Mechanism is %q: must be %s, %s or %s",
			prefix, c.Mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512))
	}
	if c.User == "" {
		errs = append(errs, fmt.Errorf("%s.SASL.User is empty: required with mechanism %s", prefix, c.Mechanism))
	}
	if c.Password == "" {
		errs = append(errs, fmt.Errorf("%s.SASL.Password is empty: required with mechanism %s", prefix, c.Mechanism))
	}
	return errors.Join(errs...)
}

func (c SASLConfig) mechanism() sasl.Mechanism {
	switch c.Mechanism {
	case SASLPlain:
		return plain.Auth{User: c.User, Pass: c.Password}.AsMechanism()
	case SASLScramSHA256:
		return scram.Auth{User: c.User, Pass: c.Password}.AsSha256Mechanism()
	case SASLScramSHA512:
		return scram.Auth{User: c.User, Pass: c.Password}.AsSha512Mechanism()
	}
	return nil
}

// ClientConfig is what a Publisher and a Subscriber need to reach Kafka.
type ClientConfig struct {
	// Brokers are the seed brokers, as host:port. Required: at least one,
	// none empty.
	Brokers []string
	// ClientID is the client id sent to the brokers, seen in their logs,
	// metrics and quotas. Defaults to DefaultClientID ("dtx").
	ClientID string
	// TLS, when not nil, makes every broker connection use TLS with a clone
	// of this configuration; an empty ServerName is set to the broker's host.
	// Defaults to nil: plaintext connections.
	TLS *tls.Config
	// SASL authenticates every broker connection when its Mechanism is set,
	// over TLS if TLS is set. Defaults to none.
	SASL SASLConfig
	// Logger receives this package's logs and the Kafka client's: the
	// client's errors as errors, its warnings as info, its info as debug.
	// Defaults to watermill.NopLogger.
	Logger watermill.LoggerAdapter
	// Opts are extra franz-go client options, applied after the ones this
	// package sets, so they win: use them for what Config does not cover
	// (heartbeat and session timeouts, fetch sizes, compression, hooks such
	// as kotel). They must not change what the component's guarantees rest
	// on: for a Publisher idempotence and acks (kgo.DisableIdempotentWrite,
	// kgo.RequiredAcks); for a Subscriber the group, topics, commit mode and
	// rebalance callbacks (kgo.ConsumerGroup, kgo.ConsumeTopics,
	// kgo.DisableAutoCommit, kgo.AutoCommitMarks, kgo.BlockRebalanceOnPoll,
	// kgo.OnPartitions*). Defaults to none.
	Opts []kgo.Opt
}

func (c *ClientConfig) setDefaults() {
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.Logger == nil {
		c.Logger = watermill.NopLogger{}
	}
}

func (c *ClientConfig) validate(prefix string) error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, fmt.Errorf("%s.Brokers is empty: name at least one host:port", prefix))
	}
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			errs = append(errs, fmt.Errorf("%s.Brokers[%d] is empty", prefix, i))
		}
	}
	if err := c.SASL.validate(prefix); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// clientOpts returns the options every client of c starts with.
func (c *ClientConfig) clientOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		kgo.WithLogger(newKgoLogger(c.Logger)),
	}
	if c.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(c.TLS.Clone()))
	}
	if m := c.SASL.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts
}

// PublisherConfig configures a Publisher.
//
// Records are written by an idempotent producer with acks=all: these are
// franz-go's defaults, which this package keeps, so a retried batch is never
// written twice nor out of order, and a record counts as published only once
// every in-sync replica has it.
type PublisherConfig struct {
	ClientConfig

	// Linger is how long a partition's batch waits for more records before
	// it is sent; a full batch is sent at once. Defaults to 0: records are
	// sent as soon as the connection allows, and those that arrive while
	// requests are in flight go into the next batch together. A linger adds
	// to the latency of every Publish call whose batches are not full, and
	// measured slower in every case of the package's benchmarks: concurrent
	// calls are already batched (see Publisher). Between 0 and one minute.
	Linger time.Duration
	// SaramaCompatibleHashing maps record keys to partitions as sarama (and
	// so watermill-kafka and most Go services on sarama) does: FNV-1a,
	// negated when negative, modulo the partition count. Set it when a topic
	// is shared with producers on sarama, so one key still lands in one
	// partition. Defaults to false: murmur2, as the Java client and
	// librdkafka's murmur2 partitioners do.
	SaramaCompatibleHashing bool
	// DeliveryTimeout bounds how long a record may wait to be acknowledged,
	// retries included; a record that times out fails its Publish call, and
	// so do the other records buffered for its partition, so that nothing
	// later in the partition is written after it. Defaults to
	// DefaultDeliveryTimeout (2 minutes); a negative value means no limit:
	// Publish retries until the broker answers or the Publisher is closed.
	// At least one second when positive.
	DeliveryTimeout time.Duration
	// AutoCreateTopics lets the broker create a topic that does not exist
	// when a record is published to it, if the broker allows it
	// (auto.create.topics.enable), with the broker's default partitions and
	// replication. Defaults to false: publishing to a missing topic fails.
	AutoCreateTopics bool
}

func (c *PublisherConfig) setDefaults() {
	c.ClientConfig.setDefaults()
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = DefaultDeliveryTimeout
	}
}

func (c *PublisherConfig) validate() error {
	const prefix = "PublisherConfig"
	var errs []error
	if err := c.ClientConfig.validate(prefix); err != nil {
		errs = append(errs, err)
	}
	if c.Linger < 0 || c.Linger > time.Minute {
		errs = append(errs, fmt.Errorf("%s.Linger is %s: must be between 0 and 1m", prefix, c.Linger))
	}
	if c.DeliveryTimeout > 0 && c.DeliveryTimeout < time.Second {
		errs = append(errs, fmt.Errorf("%s.DeliveryTimeout is %s: must be at least 1s, or negative for no limit", prefix, c.DeliveryTimeout))
	}
	return errors.Join(errs...)
}

func (c *PublisherConfig) clientOpts() []kgo.Opt {
	opts := c.ClientConfig.clientOpts()
	opts = append(opts, kgo.ProducerLinger(c.Linger))
	if c.DeliveryTimeout > 0 {
		opts = append(opts, kgo.RecordDeliveryTimeout(c.DeliveryTimeout))
	}
	if c.SaramaCompatibleHashing {
		opts = append(opts, kgo.RecordPartitioner(saramaPartitioner()))
	}
	if c.AutoCreateTopics {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}
	return append(opts, c.Opts...)
}

// saramaPartitioner places keyed records as sarama's default hash partitioner
// does and unkeyed ones as franz-go's default partitioner does.
func saramaPartitioner() kgo.Partitioner {
	return kgo.UniformBytesPartitioner(64<<10, true, true, kgo.SaramaCompatHasher(fnv32a))
}

func fnv32a(b []byte) uint32 {
	h := fnv.New32a()
	_, _ = h.Write(b) // a hash.Hash never fails to write
	return h.Sum32()
}

// InitialOffset is where a consumer group starts reading a partition it has
// no committed offset for.
type InitialOffset int

const (
	// InitialOffsetEarliest starts at the oldest record still in the
	// partition, so a new group sees everything the topic retains.
	InitialOffsetEarliest InitialOffset = iota
	// InitialOffsetLatest starts at the end of the partition, so a new group
	// sees only records written after it joined.
	InitialOffsetLatest
)

// String names o.
func (o InitialOffset) String() string {
	switch o {
	case InitialOffsetEarliest:
		return "earliest"
	case InitialOffsetLatest:
		return "latest"
	}
	return fmt.Sprintf("InitialOffset(%d)", int(o))
}

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	ClientConfig

	// ConsumerGroup is the Kafka consumer group every subscription of the
	// Subscriber joins: the group's members share a topic's partitions and
	// its committed offsets. Required.
	ConsumerGroup string
	// InitialOffset is where the group starts reading a partition it has no
	// committed offset for. Defaults to InitialOffsetEarliest.
	InitialOffset InitialOffset
	// ReadCommitted makes the subscriber skip records of aborted
	// transactions and wait for open transactions to end (isolation level
	// read_committed). Defaults to false: read_uncommitted, which sees every
	// record at once; records written without transactions are the same
	// either way.
	ReadCommitted bool
	// NackResendDelay is how long a nacked message waits before it is
	// delivered again; its partition delivers nothing else meanwhile (with
	// MaxInFlightPerPartition 1). Defaults to DefaultNackResendDelay
	// (100ms); NoDelay (or any negative value) redelivers at once. At most
	// one hour.
	NackResendDelay time.Duration
	// MaxInFlightPerPartition is how many consecutive messages of one
	// partition, counted from the oldest one not yet acked, may be delivered
	// at once. Defaults to 1: the next message of a partition is delivered
	// only after the previous one is acked, which keeps handling in
	// partition (and so key) order, as Watermill's router expects. Larger
	// values let handlers of one partition run concurrently and give up that
	// order; an offset is still committed only once every earlier message of
	// its partition was acked. Between 1 and 10000.
	MaxInFlightPerPartition int
	// ReadAheadPerPartition is how many records of one partition may be
	// fetched but not yet delivered before fetching from that partition
	// pauses; it resumes once half of them are delivered. Other partitions
	// are not affected. Defaults to DefaultReadAheadPerPartition (1000);
	// between 1 and 1000000. One fetch response may overshoot it.
	ReadAheadPerPartition int
	// CommitInterval is how often acked offsets are committed in the
	// background. They are also committed when partitions are revoked and
	// when a subscription ends. After a crash the group redelivers what was
	// acked in the last interval. Defaults to DefaultCommitInterval (5s); at
	// least 10ms.
	CommitInterval time.Duration
	// CommitTimeout bounds each synchronous commit: the one made when
	// partitions are revoked and the one made when a subscription ends.
	// Defaults to DefaultCommitTimeout (10s).
	CommitTimeout time.Duration
}

func (c *SubscriberConfig) setDefaults() {
	c.ClientConfig.setDefaults()
	switch {
	case c.NackResendDelay == 0:
		c.NackResendDelay = DefaultNackResendDelay
	case c.NackResendDelay < 0:
		c.NackResendDelay = 0
	}
	if c.MaxInFlightPerPartition == 0 {
		c.MaxInFlightPerPartition = 1
	}
	if c.ReadAheadPerPartition == 0 {
		c.ReadAheadPerPartition = DefaultReadAheadPerPartition
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = DefaultCommitInterval
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = DefaultCommitTimeout
	}
}

func (c *SubscriberConfig) validate() error {
	const prefix = "SubscriberConfig"
	var errs []error
	if err := c.ClientConfig.validate(prefix); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(c.ConsumerGroup) == "" {
		errs = append(errs, fmt.Errorf("%s.ConsumerGroup is empty: name the consumer group", prefix))
	}
	if c.InitialOffset != InitialOffsetEarliest && c.InitialOffset != InitialOffsetLatest {
		errs = append(errs, fmt.Errorf("%s.InitialOffset is %d: must be InitialOffsetEarliest or InitialOffsetLatest", prefix, int(c.InitialOffset)))
	}
	if c.NackResendDelay > time.Hour {
		errs = append(errs, fmt.Errorf("%s.NackResendDelay is %s: must be at most 1h", prefix, c.NackResendDelay))
	}
	if c.MaxInFlightPerPartition < 1 || c.MaxInFlightPerPartition > maxInFlightPerPartition {
		errs = append(errs, fmt.Errorf("%s.MaxInFlightPerPartition is %d: must be between 1 and %d", prefix, c.MaxInFlightPerPartition, maxInFlightPerPartition))
	}
	if c.ReadAheadPerPartition < 1 || c.ReadAheadPerPartition > maxReadAheadPerPartition {
		errs = append(errs, fmt.Errorf("%s.ReadAheadPerPartition is %d: must be between 1 and %d", prefix, c.ReadAheadPerPartition, maxReadAheadPerPartition))
	}
	if c.CommitInterval < minCommitInterval {
		errs = append(errs, fmt.Errorf("%s.CommitInterval is %s: must be at least %s", prefix, c.CommitInterval, minCommitInterval))
	}
	if c.CommitTimeout < 0 {
		errs = append(errs, fmt.Errorf("%s.CommitTimeout is %s: must be positive", prefix, c.CommitTimeout))
	}
	return errors.Join(errs...)
}

// groupOpts returns the options of the client of one subscription: the
// consumer group with marked commits, rebalances blocked while a poll's
// records are handed to the partitions (see subscription.poll), and the
// callbacks that start and stop the partitions.
func (c *SubscriberConfig) groupOpts(topic string, sub *subscription) []kgo.Opt {
	opts := c.clientOpts()
	start := kgo.NewOffset().AtStart()
	if c.InitialOffset == InitialOffsetLatest {
		start = kgo.NewOffset().AtEnd()
	}
	opts = append(opts,
		kgo.ConsumerGroup(c.ConsumerGroup),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeStartOffset(start),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(c.CommitInterval),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(sub.onAssigned),
		kgo.OnPartitionsRevoked(sub.onRevoked),
		kgo.OnPartitionsLost(sub.onLost),
		// The client's logs carry the subscription's topic and group.
		kgo.WithLogger(newKgoLogger(sub.logger)),
	)
	if c.ReadCommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	return append(opts, c.Opts...)
}
