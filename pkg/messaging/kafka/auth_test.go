package kafka_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/vextrus/dtx/pkg/messaging/kafka"
)

// selfSignedTLS returns a server configuration with a certificate for
// 127.0.0.1 and a client configuration that trusts it.
func selfSignedTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// TestSASLOverTLS publishes and consumes with each SASL mechanism, over TLS,
// against the embedded broker (the development Apache broker has neither).
func TestSASLOverTLS(t *testing.T) {
	t.Parallel()
	server, client := selfSignedTLS(t)
	users := map[kafka.SASLMechanism][2]string{
		kafka.SASLPlain:       {"plain-user", "plain-pass"},
		kafka.SASLScramSHA256: {"scram256-user", "scram256-pass"},
		kafka.SASLScramSHA512: {"scram512-user", "scram512-pass"},
	}
	opts := []kfake.Opt{kfake.TLS(server), kfake.EnableSASL()}
	for m, u := range users {
		opts = append(opts, kfake.Superuser(string(m), u[0], u[1]), kfake.SeedTopics(1, "auth-"+strings.ToLower(string(m))))
	}
	brokers := startEmbedded(t, opts...)

	for m, u := range users {
		t.Run(string(m), func(t *testing.T) {
			t.Parallel()
			auth := kafka.SASLConfig{Mechanism: m, User: u[0], Password: u[1]}
			topic := "auth-" + strings.ToLower(string(m))
			sub := newSubscriber(t, brokers, "g-"+topic, func(c *kafka.SubscriberConfig) {
				c.TLS, c.SASL = client, auth
			})
			pub := newPublisher(t, brokers, func(c *kafka.PublisherConfig) { c.TLS, c.SASL = client, auth })
			sent := newMessages(1, "k")
			require.NoError(t, pub.Publish(topic, sent...))
			got := receive(t, subscribe(t, sub, topic))
			require.Equal(t, sent[0].UUID, got.UUID)
			require.True(t, got.Ack())
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		pub := newPublisher(t, brokers, func(c *kafka.PublisherConfig) {
			c.TLS = client
			c.SASL = kafka.SASLConfig{Mechanism: kafka.SASLScramSHA256, User: "scram256-user", Password: "wrong"}
			c.DeliveryTimeout = time.Second
		})
		require.Error(t, pub.Publish("auth-wrong", newMessages(1, "")...))
	})
}
