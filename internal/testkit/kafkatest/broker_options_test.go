package kafkatest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
)

// A broker started with a SCRAM user and the authorizer: the user
// authenticates with either mechanism on SASLAddr and a wrong password is
// refused; the user may not write a topic until an ACL allows it, while the
// PLAINTEXT listener, the test's, may do anything.
func TestStartBrokerSCRAMAndAuthorizer(t *testing.T) {
	t.Parallel()
	const user, password = "alice", "alice-secret.1"
	b := kafkatest.StartBroker(t, kafkatest.WithSCRAMUser(user, password), kafkatest.WithAuthorizer())
	require.NotEqual(t, b.Addr(), b.SASLAddr())
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// The plaintext listener's principal is a super user: it creates the topic.
	admCl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	require.NoError(t, err)
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	topic := kafkatest.TopicName(t)
	res, err := adm.CreateTopic(ctx, 1, 1, nil, topic)
	require.NoError(t, err)
	require.NoError(t, res.Err)

	client := func(m sasl.Mechanism, opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{
			kgo.SeedBrokers(b.SASLAddr()),
			kgo.SASL(m),
			kgo.DefaultProduceTopic(topic),
			kgo.RecordDeliveryTimeout(10 * time.Second),
		}, opts...)...)
		require.NoError(t, err)
		t.Cleanup(cl.Close)
		return cl
	}
	auth := scram.Auth{User: user, Pass: password}
	require.NoError(t, client(auth.AsSha512Mechanism()).Ping(ctx), "SCRAM-SHA-512")
	alice := client(auth.AsSha256Mechanism())
	require.NoError(t, alice.Ping(ctx), "SCRAM-SHA-256")

	wrong := scram.Auth{User: user, Pass: password + "x"}
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	err = client(wrong.AsSha256Mechanism()).Ping(pctx)
	require.ErrorIs(t, err, kerr.SaslAuthenticationFailed, "a wrong password is refused")

	// No ACL: the user may not write the topic.
	err = alice.ProduceSync(ctx, &kgo.Record{Value: []byte("refused")}).FirstErr()
	require.ErrorIs(t, err, kerr.TopicAuthorizationFailed)

	acl := kadm.NewACLs().Allow("User:"+user).ResourcePatternType(kadm.ACLPatternLiteral).
		Topics(topic).Operations(kadm.OpWrite, kadm.OpDescribe)
	results, err := adm.CreateACLs(ctx, acl)
	require.NoError(t, err)
	for _, r := range results {
		require.NoError(t, r.Err, "create ACL %+v", r)
	}
	require.Eventually(t, func() bool {
		return alice.ProduceSync(ctx, &kgo.Record{Value: []byte("allowed")}).FirstErr() == nil
	}, 30*time.Second, 200*time.Millisecond, "the user writes the topic once an ACL allows it")
}
