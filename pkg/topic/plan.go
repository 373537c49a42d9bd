package topic

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Report says, for each spec, what Plan found or Apply did.
type Report struct {
	// Create are the specs of topics that do not exist: Plan would create
	// them. After Apply, the ones it created are in Created.
	Create []Spec
	// Created are the topics Apply created (empty after Plan).
	Created []Spec
	// OK are the specs of topics that exist and match.
	OK []Spec
	// Drift are the topics that exist but differ from their spec. Neither
	// Plan nor Apply changes them.
	Drift []Drift
}

// Changes reports whether Apply would create a topic or whether a topic
// drifted from its spec.
func (r *Report) Changes() bool { return len(r.Create) > 0 || len(r.Drift) > 0 }

// Drift is an existing topic that differs from its spec.
type Drift struct {
	// Spec is the wanted shape.
	Spec Spec
	// Diffs are the differences, one per field, sorted by field.
	Diffs []Diff
}

// Diff is one field of a topic that differs from its spec.
type Diff struct {
	// Field is "partitions", "replication_factor" or "configs.<name>".
	Field string
	// Want is the spec's value.
	Want string
	// Have is the topic's value on the cluster ("" for a config the broker
	// does not report).
	Have string
}

// String reads "partitions: want 6, have 3".
func (d Diff) String() string {
	have := d.Have
	if have == "" {
		have = "(unset)"
	}
	return fmt.Sprintf("%s: want %s, have %s", d.Field, d.Want, have)
}

// Plan compares specs with the cluster: which topics are missing, which
// exist and match, and which drifted (fewer or more partitions, another
// replication factor, configs that differ). It changes nothing. Specs must
// be complete (see Defaults.Apply); a spec's Partitions or
// ReplicationFactor of -1 or 0 is not compared.
func Plan(ctx context.Context, adm *kadm.Client, specs []Spec) (*Report, error) {
	for _, s := range specs {
		if err := s.Validate(); err != nil {
			return nil, err
		}
	}
	names := Names(specs)
	rep := &Report{}
	if len(names) == 0 {
		return rep, nil
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("topic: list topics: %w", err)
	}
	var existing []string
	for _, s := range specs {
		d, ok := details[s.Name]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			rep.Create = append(rep.Create, s)
		case d.Err != nil:
			return nil, fmt.Errorf("topic: describe %s: %w", s.Name, d.Err)
		default:
			existing = append(existing, s.Name)
		}
	}
	configs := map[string]map[string]string{}
	if len(existing) > 0 {
		rcs, err := adm.DescribeTopicConfigs(ctx, existing...)
		if err != nil {
			return nil, fmt.Errorf("topic: describe configs: %w", err)
		}
		for _, rc := range rcs {
			if rc.Err != nil {
				return nil, fmt.Errorf("topic: describe configs of %s: %w", rc.Name, rc.Err)
			}
			m := map[string]string{}
			for _, c := range rc.Configs {
				m[c.Key] = c.MaybeValue()
			}
			configs[rc.Name] = m
		}
	}
	for _, s := range specs {
		if !slices.Contains(existing, s.Name) {
			continue
		}
		diffs := compare(s, details[s.Name], configs[s.Name])
		if len(diffs) == 0 {
			rep.OK = append(rep.OK, s)
		} else {
			rep.Drift = append(rep.Drift, Drift{Spec: s, Diffs: diffs})
		}
	}
	return rep, nil
}

func compare(s Spec, d kadm.TopicDetail, configs map[string]string) []Diff {
	var diffs []Diff
	if have := int32(len(d.Partitions)); s.Partitions > 0 && have != s.Partitions {
		diffs = append(diffs, Diff{Field: "partitions", Want: strconv.Itoa(int(s.Partitions)), Have: strconv.Itoa(int(have))})
	}
	if s.ReplicationFactor > 0 {
		if have := replicationFactor(d); have != int(s.ReplicationFactor) {
			diffs = append(diffs, Diff{Field: "replication_factor", Want: strconv.Itoa(int(s.ReplicationFactor)), Have: strconv.Itoa(have)})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Configs)) {
		if have := configs[k]; have != s.Configs[k] {
			diffs = append(diffs, Diff{Field: "configs." + k, Want: s.Configs[k], Have: have})
		}
	}
	return diffs
}

// replicationFactor is the smallest replica count of the topic's
// partitions.
func replicationFactor(d kadm.TopicDetail) int {
	rf := -1
	for _, p := range d.Partitions {
		if rf < 0 || len(p.Replicas) < rf {
			rf = len(p.Replicas)
		}
	}
	return rf
}

// Apply creates the topics of specs that do not exist, with their
// partitions, replication factor and configs, and waits until each created
// topic has a leader for every partition. Topics that exist are left as
// they are, drifted or not: the report lists the drift. Applying the same
// specs again creates nothing. A topic that another client creates at the
// same time counts as existing. Specs must be complete (Defaults.Apply).
func Apply(ctx context.Context, adm *kadm.Client, specs []Spec) (*Report, error) {
	rep, err := Plan(ctx, adm, specs)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, s := range rep.Create {
		configs := make(map[string]*string, len(s.Configs))
		for k, v := range s.Configs {
			configs[k] = &v
		}
		res, err := adm.CreateTopic(ctx, s.Partitions, s.ReplicationFactor, configs, s.Name)
		if err == nil {
			err = res.Err
		}
		switch {
		case err == nil:
			rep.Created = append(rep.Created, s)
		case errors.Is(err, kerr.TopicAlreadyExists):
		default:
			msg := ""
			if res.ErrMessage != "" {
				msg = " (" + res.ErrMessage + ")"
			}
			errs = append(errs, fmt.Errorf("topic: create %s (partitions %d, replication factor %d): %w%s",
				s.Name, s.Partitions, s.ReplicationFactor, err, msg))
		}
	}
	if len(errs) > 0 {
		return rep, errors.Join(errs...)
	}
	if err := waitLeaders(ctx, adm, Names(rep.Created)); err != nil {
		return rep, err
	}
	return rep, nil
}

// waitLeaders polls the metadata until every partition of topics has a
// leader.
func waitLeaders(ctx context.Context, adm *kadm.Client, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	for {
		details, err := adm.ListTopics(ctx, topics...)
		pending := ""
		if err != nil {
			pending = err.Error()
		} else {
			for _, t := range topics {
				d, ok := details[t]
				switch {
				case !ok || d.Err != nil || len(d.Partitions) == 0:
					pending = t + " is not in the metadata yet"
				default:
					for _, p := range d.Partitions {
						if p.Err != nil || p.Leader < 0 {
							pending = fmt.Sprintf("%s partition %d has no leader yet", t, p.Partition)
						}
					}
				}
				if pending != "" {
					break
				}
			}
		}
		if pending == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic: created topics not usable: %s: %w", pending, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Missing returns which of names do not exist on the cluster, in the order
// given; nil when all exist.
func Missing(ctx context.Context, adm *kadm.Client, names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, nil
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("topic: list topics: %w", err)
	}
	var missing []string
	for _, n := range names {
		if !details.Has(n) {
			missing = append(missing, n)
		}
	}
	return missing, nil
}

// MissingError reports topics that do not exist. Error() reads "topic X is
// missing: run dtxctl topics apply" (or "topics X, Y are missing: ...").
type MissingError struct {
	// Topics are the missing topics.
	Topics []string
}

// Error implements error.
func (e *MissingError) Error() string {
	if len(e.Topics) == 1 {
		return fmt.Sprintf("topic %s is missing: run dtxctl topics apply", e.Topics[0])
	}
	return fmt.Sprintf("topics %s are missing: run dtxctl topics apply", strings.Join(e.Topics, ", "))
}

// Require returns a *MissingError when any of names does not exist, nil
// when all do, or the error of asking the cluster.
func Require(ctx context.Context, adm *kadm.Client, names []string) error {
	missing, err := Missing(ctx, adm, names)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return &MissingError{Topics: missing}
	}
	return nil
}
