package saga_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/saga"
)

func simpleDef(name string, version int, triggerType string) *saga.Definition {
	d := &saga.Definition{
		Name: name, Version: version,
		Steps: []saga.Step{{Name: "s", Action: saga.Command{Topic: "t", Type: "do"}, Success: []string{"done"}}},
	}
	if triggerType != "" {
		d.Triggers = []saga.Trigger{{Topic: "in", Type: triggerType}}
	}
	return d
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	a1, a2, b1 := simpleDef("a", 1, "a.v1"), simpleDef("a", 2, "a.v2"), simpleDef("b", 1, "b.start")
	r, err := saga.NewRegistry(a2, b1, a1)
	require.NoError(t, err)
	require.Equal(t, []*saga.Definition{a1, a2, b1}, r.Definitions())
	d, ok := r.Get("a", 1)
	require.True(t, ok)
	require.Same(t, a1, d)
	_, ok = r.Get("a", 3)
	require.False(t, ok)
	d, ok = r.Latest("a")
	require.True(t, ok)
	require.Same(t, a2, d)
	_, ok = r.Latest("c")
	require.False(t, ok)
	require.Equal(t, []saga.TriggerRef{
		{Definition: a2, Trigger: a2.Triggers[0]},
		{Definition: b1, Trigger: b1.Triggers[0]},
	}, r.Triggers())
	// NewRegistry set the defaults.
	require.Equal(t, saga.DefaultStepTimeout, a1.Steps[0].Timeout)
}

func TestRegistryErrors(t *testing.T) {
	t.Parallel()
	_, err := saga.NewRegistry(simpleDef("a", 1, ""), simpleDef("a", 1, ""))
	require.ErrorContains(t, err, "a@1 is registered twice")
	bad := simpleDef("a", 2, "")
	bad.Steps[0].Action.Topic = ""
	_, err = saga.NewRegistry(bad)
	require.ErrorContains(t, err, `definition a@2: step "s": field "action.topic": required`)
	_, err = saga.NewRegistry(nil)
	require.ErrorContains(t, err, "nil")
}

func TestValidateGo(t *testing.T) {
	t.Parallel()
	d := &saga.Definition{
		Name: "x", Version: 1,
		Steps: []saga.Step{
			{Name: "s", Action: saga.Command{Topic: "t", Type: "do"}, Success: []string{"ok"},
				Compensation: &saga.Compensation{Command: saga.Command{Topic: "t", Type: "undo"}}},
		},
	}
	err := d.Validate()
	require.ErrorContains(t, err, `step "s": field "timeout": must be positive`)
	require.ErrorContains(t, err, `step "s": field "retry.attempts": must be at least 1`)
	require.ErrorContains(t, err, `step "s": field "compensation.success": at least one reply type is required`)
	d.SetDefaults()
	d.SetDefaults()
	require.ErrorContains(t, d.Validate(), `compensation.success`)
	d.Steps[0].Compensation.Success = []string{"undone"}
	require.NoError(t, d.Validate())
	d.Steps[0].Retry.Multiplier = 0.5
	require.ErrorContains(t, d.Validate(), `field "retry.multiplier"`)
	require.Equal(t, -1, d.StepIndex("nope"))
	require.Equal(t, 0, d.StepIndex("s"))
	require.EqualError(t, (&saga.Definition{}).Validate(),
		"field \"name\": required\nfield \"version\": must be at least 1\nfield \"steps\": at least one step is required")
}
