package kafka

import (
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/stretchr/testify/require"
)

func TestPublisherConfigDefaults(t *testing.T) {
	t.Parallel()
	c := PublisherConfig{ClientConfig: ClientConfig{Brokers: []string{"b:9092"}}}
	c.setDefaults()
	require.NoError(t, c.validate())
	require.Equal(t, DefaultClientID, c.ClientID)
	require.Zero(t, c.Linger)
	require.Equal(t, DefaultDeliveryTimeout, c.DeliveryTimeout)
	require.Equal(t, watermill.NopLogger{}, c.Logger)

	c = PublisherConfig{ClientConfig: ClientConfig{Brokers: []string{"b:9092"}}, Linger: time.Millisecond, DeliveryTimeout: -1}
	c.setDefaults()
	require.NoError(t, c.validate())
	require.Equal(t, time.Millisecond, c.Linger)
	require.Negative(t, c.DeliveryTimeout)
}

func TestPublisherConfigValidate(t *testing.T) {
	t.Parallel()
	c := PublisherConfig{
		ClientConfig:    ClientConfig{Brokers: []string{"b:9092", " "}, SASL: SASLConfig{Mechanism: "GSSAPI"}},
		Linger:          2 * time.Minute,
		DeliveryTimeout: time.Millisecond,
	}
	c.setDefaults()
	err := c.validate()
	for _, field := range []string{
		"PublisherConfig.Brokers[1]", "PublisherConfig.SASL.Mechanism", "PublisherConfig.SASL.User",
		"PublisherConfig.SASL.Password", "PublisherConfig.Linger", "PublisherConfig.DeliveryTimeout",
	} {
		require.ErrorContains(t, err, field)
	}

	_, err = NewPublisher(PublisherConfig{})
	require.ErrorContains(t, err, "PublisherConfig.Brokers is empty")
}

func TestSubscriberConfigDefaults(t *testing.T) {
	t.Parallel()
	c := SubscriberConfig{ClientConfig: ClientConfig{Brokers: []string{"b:9092"}}, ConsumerGroup: "g"}
	c.setDefaults()
	require.NoError(t, c.validate())
	require.Equal(t, InitialOffsetEarliest, c.InitialOffset)
	require.Equal(t, DefaultNackResendDelay, c.NackResendDelay)
	require.Equal(t, 1, c.MaxInFlightPerPartition)
	require.Equal(t, DefaultReadAheadPerPartition, c.ReadAheadPerPartition)
	require.Equal(t, DefaultCommitInterval, c.CommitInterval)
	require.Equal(t, DefaultCommitTimeout, c.CommitTimeout)

	c.NackResendDelay = NoDelay
	c.setDefaults()
	require.Zero(t, c.NackResendDelay)
}

func TestSubscriberConfigValidate(t *testing.T) {
	t.Parallel()
	c := SubscriberConfig{
		InitialOffset:           InitialOffset(7),
		NackResendDelay:         2 * time.Hour,
		MaxInFlightPerPartition: 10_001,
		ReadAheadPerPartition:   -1,
		CommitInterval:          time.Millisecond,
		CommitTimeout:           -time.Second,
		ClientConfig:            ClientConfig{SASL: SASLConfig{User: "u"}},
	}
	c.setDefaults()
	err := c.validate()
	for _, field := range []string{
		"SubscriberConfig.Brokers", "SubscriberConfig.ConsumerGroup", "SubscriberConfig.InitialOffset",
		"SubscriberConfig.NackResendDelay", "SubscriberConfig.MaxInFlightPerPartition",
		"SubscriberConfig.ReadAheadPerPartition", "SubscriberConfig.CommitInterval",
		"SubscriberConfig.CommitTimeout",
		"SubscriberConfig.SASL.Mechanism",
	} {
		require.ErrorContains(t, err, field)
	}

	_, err = NewSubscriber(SubscriberConfig{ClientConfig: ClientConfig{Brokers: []string{"b:9092"}}})
	require.ErrorContains(t, err, "SubscriberConfig.ConsumerGroup is empty")
}

func TestSASLConfigHidesPassword(t *testing.T) {
	t.Parallel()
	c := PublisherConfig{ClientConfig: ClientConfig{SASL: SASLConfig{Mechanism: SASLScramSHA512, User: "svc", Password: "s3cret"}}}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(format, c)
		require.NotContains(t, out, "s3cret", format)
	}
	require.Equal(t, "{Mechanism:SCRAM-SHA-512 User:svc Password:<redacted>}", c.SASL.String())
	for _, m := range []SASLMechanism{SASLPlain, SASLScramSHA256, SASLScramSHA512} {
		s := SASLConfig{Mechanism: m, User: "u", Password: "p"}
		require.NoError(t, s.validate("X"))
		require.Equal(t, string(m), s.mechanism().Name())
	}
}
