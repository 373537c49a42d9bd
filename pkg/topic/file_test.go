package topic_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/topic"
)

func TestParseFile(t *testing.T) {
	t.Parallel()
	specs, err := topic.ParseFile("topics.yaml", []byte(`
defaults:
  partitions: 6
  configs:
    min.insync.replicas: 2
topics:
  - name: sales.events
  - name: sales.orders
    partitions: 12
    replication_factor: 3
    configs:
      retention.ms: 604800000
      cleanup.policy: compact
`))
	require.NoError(t, err)
	require.Equal(t, []topic.Spec{
		{Name: "sales.events", Partitions: 6, Configs: map[string]string{"min.insync.replicas": "2"}, Source: "topics.yaml:7"},
		{Name: "sales.orders", Partitions: 12, ReplicationFactor: 3, Source: "topics.yaml:8", Configs: map[string]string{
			"min.insync.replicas": "2", "retention.ms": "604800000", "cleanup.policy": "compact"}},
	}, specs)

	empty, err := topic.ParseFile("empty.yaml", nil)
	require.NoError(t, err)
	require.Empty(t, empty)
}

func TestParseFileErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, yaml, want string
		line             int
	}{
		{"unknown key", "topics:\n  - name: a\n    partitions: 1\n    retention: 1d\n", "field retention not found", 4},
		{"partitions zero", "topics:\n  - name: a\n  - name: b\n    partitions: 0\n", `topic "b": partitions: must be at least 1`, 3},
		{"duplicate", "topics:\n  - name: a\n  - name: a\n", `topic "a": listed twice (first at line 2)`, 3},
		{"bad name", "topics:\n  - name: a b\n", `topic name "a b"`, 2},
		{"no name", "topics:\n  - partitions: 2\n", "topics[0]: name: required", 2},
		{"not a number", "defaults:\n  partitions: many\n", "cannot unmarshal", 2},
		{"config not scalar", "topics:\n  - name: a\n    configs:\n      retention.ms: [1]\n", "configs.retention.ms: must be a string, number or boolean", 2},
		{"syntax", "topics:\n  - name: a\n   partitions: 2\n", "did not find expected", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := topic.ParseFile("topics.yaml", []byte(tc.yaml))
			require.Error(t, err)
			var fe *topic.FileError
			require.ErrorAs(t, err, &fe, "%v", err)
			require.Equal(t, "topics.yaml", fe.File)
			if tc.line < 0 { // yaml reports where the enclosing block starts
				require.Positive(t, fe.Line, "%v", err)
			} else {
				require.Equal(t, tc.line, fe.Line, "%v", err)
			}
			require.Contains(t, err.Error(), "topics.yaml:", err.Error())
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestLoadFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "mine.yaml")
	require.NoError(t, os.WriteFile(path, []byte("topics:\n  - name: ok\n  - name: bad\n    partitions: -2\n"), 0o600))
	_, err := topic.LoadFile(path)
	require.ErrorContains(t, err, path+":3: ")
	require.ErrorContains(t, err, "partitions")

	_, err = topic.LoadFile(filepath.Join(t.TempDir(), "absent.yaml"))
	var fe *topic.FileError
	require.ErrorAs(t, err, &fe)
	require.Contains(t, err.Error(), "absent.yaml")
}

// TestExampleFile keeps the commented example of the repository valid.
func TestExampleFile(t *testing.T) {
	t.Parallel()
	specs, err := topic.LoadFile("../../examples/order-to-cash/topics.yaml")
	require.NoError(t, err)
	require.Contains(t, topic.Names(specs), "sales.orders")
}

func TestMerge(t *testing.T) {
	t.Parallel()
	derived := topic.FromNames("saga definitions", "a", "b")
	file := []topic.Spec{{Name: "b", Partitions: 6, Configs: map[string]string{"retention.ms": "1000"}, Source: "f.yaml:2"}}
	got, err := topic.Merge(append(derived, file...)...)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, int32(6), got[1].Partitions)
	require.Equal(t, "1000", got[1].Configs["retention.ms"])

	other := topic.Spec{Name: "b", Partitions: 3, Source: "g.yaml:9"}
	_, err = topic.Merge(append(file, other)...)
	require.ErrorContains(t, err, `topic "b": partitions is 6 in f.yaml:2 but 3 in g.yaml:9`)

	full := topic.Defaults{}.Apply(got)
	require.Equal(t, topic.DefaultPartitions, full[0].Partitions)
	require.Equal(t, topic.DefaultReplicationFactor, full[0].ReplicationFactor)
	require.Equal(t, int32(6), full[1].Partitions)
}
