package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/saga"
)

// topicsSetup writes a saga definition and a topics file whose topics are
// unique to the test and returns the environment and flags that name them,
// the prefix of every topic, and an admin client. Every topic with the
// prefix is deleted at cleanup.
func topicsSetup(t *testing.T) (map[string]string, []string, string, *kadm.Client) {
	t.Helper()
	adm := kadm.NewClient(kafkatest.NewClient(t))
	prefix := kafkatest.TopicName(t) + "."
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		topics, err := adm.ListTopics(ctx)
		if err != nil {
			return
		}
		var mine []string
		for _, n := range topics.Names() {
			if strings.HasPrefix(n, prefix) {
				mine = append(mine, n)
			}
		}
		_, _ = adm.DeleteTopics(ctx, mine...)
	})
	dir := t.TempDir()
	defs := filepath.Join(dir, "sagas")
	require.NoError(t, os.Mkdir(defs, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(defs, "pay.yaml"), fmt.Appendf(nil, `
name: pay
version: 1
triggers:
  - {topic: %[1]sorders, type: order.placed}
steps:
  - name: charge
    action: {topic: %[1]spayments, type: payment.charge}
    success: [payment.charged]
    compensation:
      topic: %[1]spayments
      type: payment.refund
      success: [payment.refunded]
`, prefix), 0o600))
	file := filepath.Join(dir, "topics.yaml")
	require.NoError(t, os.WriteFile(file, fmt.Appendf(nil, `
defaults:
  partitions: 2
topics:
  - name: %[1]saudit
    configs: {retention.ms: 3600000}
  - name: %[1]sorders
    partitions: 4
`, prefix), 0o600))
	env := map[string]string{"DTX_KAFKA_BROKERS": strings.Join(kafkatest.Brokers(), ",")}
	args := []string{"--definitions", defs, "--file", file, "--topic-prefix", prefix, "--replication-factor", "1"}
	return env, args, prefix, adm
}

func TestTopicsPlanApply(t *testing.T) {
	t.Parallel()
	env, args, prefix, adm := topicsSetup(t)
	want := []string{
		prefix + "audit", prefix + "orders", prefix + "orders.dlq", prefix + "payments",
		prefix + saga.DefaultReplyTopic, prefix + saga.DefaultReplyTopic + ".dlq", prefix + saga.DefaultEventTopic,
	}

	plan := dtxctl(t, env, append([]string{"topics", "plan"}, args...)...)
	require.Equal(t, exitOK, plan.code, plan.stderr)
	for _, name := range want {
		require.Regexp(t, `(?m)^create\s+`+regexp.QuoteMeta(name)+`\s`, plan.stdout)
	}
	require.Contains(t, plan.stdout, "plan: 7 to create, 0 up to date, 0 drifted")
	require.Regexp(t, `(?m)^create\s+`+regexp.QuoteMeta(prefix+"orders")+`\s+4\s+1\s+-\s+`, plan.stdout, "the file's partitions")
	require.Regexp(t, `(?m)^create\s+`+regexp.QuoteMeta(prefix+"payments")+`\s+3\s+1\s+-\s+saga definitions`, plan.stdout, "the default partitions")
	require.Regexp(t, `(?m)^create\s+`+regexp.QuoteMeta(prefix+"audit")+`\s+2\s+1\s+retention.ms=3600000\s`, plan.stdout)
	withExit := dtxctl(t, env, append([]string{"topics", "plan", "--exit-code"}, args...)...)
	require.Equal(t, exitChanges, withExit.code, withExit.stderr)
	details, err := adm.ListTopics(context.Background(), want...)
	require.NoError(t, err)
	for _, name := range want {
		require.False(t, details.Has(name), "plan created %s", name)
	}

	apply := dtxctl(t, env, append([]string{"topics", "apply"}, args...)...)
	require.Equal(t, exitOK, apply.code, apply.stderr)
	require.Contains(t, apply.stdout, "apply: 7 created, 0 already existed, 0 drifted")
	details, err = adm.ListTopics(context.Background(), want...)
	require.NoError(t, err)
	for _, name := range want {
		require.True(t, details.Has(name), "apply did not create %s", name)
	}
	require.Len(t, details[prefix+"orders"].Partitions, 4)

	again := dtxctl(t, env, append([]string{"topics", "apply"}, args...)...)
	require.Equal(t, exitOK, again.code, again.stderr)
	require.Contains(t, again.stdout, "apply: 0 created, 7 already existed, 0 drifted")
	clean := dtxctl(t, env, append([]string{"topics", "plan", "--exit-code"}, args...)...)
	require.Equal(t, exitOK, clean.code, clean.stdout+clean.stderr)
	require.Contains(t, clean.stdout, "plan: 0 to create, 7 up to date, 0 drifted")

	// Wanting more partitions than the topic has is drift: reported by plan
	// and apply, never changed.
	drifted := slices.Concat(args, []string{"--partitions", "5"})
	plan = dtxctl(t, env, append([]string{"topics", "plan", "--exit-code"}, drifted...)...)
	require.Equal(t, exitChanges, plan.code, plan.stdout+plan.stderr)
	require.Contains(t, plan.stdout, "drift: "+prefix+"payments: partitions: want 5, have 3")
	apply = dtxctl(t, env, append([]string{"topics", "apply"}, drifted...)...)
	require.Equal(t, exitOK, apply.code, apply.stderr)
	require.Contains(t, apply.stdout, "drift: "+prefix+"payments: partitions: want 5, have 3")
	details, err = adm.ListTopics(context.Background(), prefix+"payments")
	require.NoError(t, err)
	require.Len(t, details[prefix+"payments"].Partitions, 3, "apply changed a drifted topic")
}

func TestTopicsErrors(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("topics:\n  - name: a\n    partition: 3\n"), 0o600))
	env := map[string]string{"DTX_KAFKA_BROKERS": strings.Join(kafkatest.Brokers(), ",")}
	r := dtxctl(t, env, "topics", "plan", "--file", bad)
	require.Equal(t, exitFailure, r.code)
	require.Contains(t, r.stderr, bad+":3: field partition not found")

	r = dtxctl(t, env, "topics", "apply", "--partitions", "0")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "--partitions 0")

	r = dtxctl(t, nil, "topics", "plan", "--help")
	require.Equal(t, exitOK, r.code)
	require.Contains(t, r.stdout, "--exit-code")
	require.Contains(t, r.stdout, "DTX_TOPIC_PREFIX")
}
