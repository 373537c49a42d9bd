package topic_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/pkg/topic"
)

// setup returns an admin client and a function that names a fresh topic,
// deleted at cleanup whether or not the test created it.
func setup(t *testing.T) (*kadm.Client, func() string) {
	t.Helper()
	adm := kadm.NewClient(kafkatest.NewClient(t))
	var names []string
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = adm.DeleteTopics(ctx, names...)
	})
	return adm, func() string {
		n := kafkatest.TopicName(t)
		names = append(names, n)
		return n
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestPlanApply(t *testing.T) {
	t.Parallel()
	adm, name := setup(t)
	a, b := name(), name()
	specs := topic.Defaults{Partitions: 2, ReplicationFactor: 1}.Apply([]topic.Spec{
		{Name: a},
		{Name: b, Partitions: 1, Configs: map[string]string{"retention.ms": "3600000", "cleanup.policy": "compact"}},
	})

	missing, err := topic.Missing(ctx(t), adm, []string{a, b})
	require.NoError(t, err)
	require.Equal(t, []string{a, b}, missing)
	require.ErrorContains(t, topic.Require(ctx(t), adm, []string{a}), "topic "+a+" is missing: run dtxctl topics apply")

	plan, err := topic.Plan(ctx(t), adm, specs)
	require.NoError(t, err)
	require.Equal(t, []string{a, b}, topic.Names(plan.Create))
	require.Empty(t, plan.OK)
	require.Empty(t, plan.Drift)
	require.True(t, plan.Changes())
	missing, err = topic.Missing(ctx(t), adm, []string{a, b})
	require.NoError(t, err)
	require.Len(t, missing, 2, "Plan created a topic")

	first, err := topic.Apply(ctx(t), adm, specs)
	require.NoError(t, err)
	require.Equal(t, []string{a, b}, topic.Names(first.Created))

	details, err := adm.ListTopics(ctx(t), a, b)
	require.NoError(t, err)
	require.Len(t, details[a].Partitions, 2)
	require.Len(t, details[b].Partitions, 1)
	rc, err := adm.DescribeTopicConfigs(ctx(t), b)
	require.NoError(t, err)
	cfg, err := rc.On(b, nil)
	require.NoError(t, err)
	got := map[string]string{}
	for _, c := range cfg.Configs {
		got[c.Key] = c.MaybeValue()
	}
	require.Equal(t, "3600000", got["retention.ms"])
	require.Equal(t, "compact", got["cleanup.policy"])

	second, err := topic.Apply(ctx(t), adm, specs)
	require.NoError(t, err)
	require.Empty(t, second.Created, "the second apply created topics")
	require.Empty(t, second.Create)
	require.Empty(t, second.Drift)
	require.Equal(t, []string{a, b}, topic.Names(second.OK))
	require.False(t, second.Changes())
	require.NoError(t, topic.Require(ctx(t), adm, []string{a, b}))
}

func TestPlanReportsDrift(t *testing.T) {
	t.Parallel()
	adm, name := setup(t)
	fewer, more, cfg := name(), name(), name()
	_, err := topic.Apply(ctx(t), adm, []topic.Spec{
		{Name: fewer, Partitions: 1, ReplicationFactor: 1},
		{Name: more, Partitions: 4, ReplicationFactor: 1},
		{Name: cfg, Partitions: 1, ReplicationFactor: 1, Configs: map[string]string{"retention.ms": "60000"}},
	})
	require.NoError(t, err)
	specs := []topic.Spec{
		{Name: fewer, Partitions: 3, ReplicationFactor: -1},
		{Name: more, Partitions: 2, ReplicationFactor: -1},
		{Name: cfg, Partitions: 1, ReplicationFactor: 1, Configs: map[string]string{"retention.ms": "120000"}},
	}
	for _, run := range []func(context.Context, *kadm.Client, []topic.Spec) (*topic.Report, error){topic.Plan, topic.Apply} {
		rep, err := run(ctx(t), adm, specs)
		require.NoError(t, err)
		require.Empty(t, rep.Create)
		require.Empty(t, rep.Created)
		require.Empty(t, rep.OK)
		require.True(t, rep.Changes())
		byName := map[string][]topic.Diff{}
		for _, d := range rep.Drift {
			byName[d.Spec.Name] = d.Diffs
		}
		require.Equal(t, []topic.Diff{{Field: "partitions", Want: "3", Have: "1"}}, byName[fewer])
		require.Equal(t, []topic.Diff{{Field: "partitions", Want: "2", Have: "4"}}, byName[more])
		require.Equal(t, []topic.Diff{{Field: "configs.retention.ms", Want: "120000", Have: "60000"}}, byName[cfg])
		require.Equal(t, "configs.retention.ms: want 120000, have 60000", byName[cfg][0].String())
	}
	// Drift is reported, never changed.
	details, err := adm.ListTopics(ctx(t), fewer, more)
	require.NoError(t, err)
	require.Len(t, details[fewer].Partitions, 1)
	require.Len(t, details[more].Partitions, 4)
}

func TestPlanRejectsInvalidSpec(t *testing.T) {
	t.Parallel()
	adm, _ := setup(t)
	_, err := topic.Apply(ctx(t), adm, []topic.Spec{{Name: "bad name", Partitions: 1, ReplicationFactor: 1}})
	require.ErrorContains(t, err, `topic name "bad name"`)
}
