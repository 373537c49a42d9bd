package topic

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Defaults a binary or dtxctl uses for topics whose spec leaves partitions or
// the replication factor unset. They work on a one-broker development
// cluster and leave the replication factor to the cluster's own
// default.replication.factor, which a production cluster sets.
const (
	// DefaultPartitions is the number of partitions of a topic whose spec
	// does not set one.
	DefaultPartitions int32 = 3
	// DefaultReplicationFactor is the replication factor of a topic whose
	// spec does not set one: -1 asks the broker for its
	// default.replication.factor (Kafka 2.4 and later).
	DefaultReplicationFactor int16 = -1
)

// DeadLetterSuffix ends the name of the dead-letter topic of a topic.
const DeadLetterSuffix = ".dlq"

// DeadLetter returns the dead-letter topic of topic: "<topic>.dlq".
func DeadLetter(topic string) string { return topic + DeadLetterSuffix }

// maxNameLen is Kafka's limit on topic names.
const maxNameLen = 249

// Spec is the wanted shape of one topic.
type Spec struct {
	// Name is the topic's name: 1 to 249 of [a-zA-Z0-9._-], not "." or "..".
	// Required.
	Name string
	// Partitions is the number of partitions, >= 1. 0 means unset: the
	// default of whoever applies the spec (Defaults). -1 asks the broker
	// for its num.partitions; the partition count is then not compared.
	Partitions int32
	// ReplicationFactor is the number of replicas of each partition, >= 1.
	// 0 means unset (Defaults); -1 asks the broker for its
	// default.replication.factor and is not compared.
	ReplicationFactor int16
	// Configs are topic-level settings by their Kafka name, e.g.
	// "retention.ms": "604800000", "cleanup.policy": "compact",
	// "min.insync.replicas": "2". Settings not listed keep the broker's
	// defaults and are not compared.
	Configs map[string]string
	// Source says where the spec came from ("orders.yaml:12", "saga
	// order-to-cash@1"), for messages. Optional.
	Source string
}

// Defaults fills what specs leave unset.
type Defaults struct {
	// Partitions replaces a spec's Partitions of 0. Defaults to
	// DefaultPartitions; -1 means the broker's num.partitions.
	Partitions int32
	// ReplicationFactor replaces a spec's ReplicationFactor of 0. Defaults
	// to DefaultReplicationFactor (-1, the broker's default).
	ReplicationFactor int16
}

// Apply returns specs with Defaults applied to the fields they leave unset.
// A zero d uses DefaultPartitions and DefaultReplicationFactor.
func (d Defaults) Apply(specs []Spec) []Spec {
	if d.Partitions == 0 {
		d.Partitions = DefaultPartitions
	}
	if d.ReplicationFactor == 0 {
		d.ReplicationFactor = DefaultReplicationFactor
	}
	out := make([]Spec, len(specs))
	for i, s := range specs {
		if s.Partitions == 0 {
			s.Partitions = d.Partitions
		}
		if s.ReplicationFactor == 0 {
			s.ReplicationFactor = d.ReplicationFactor
		}
		s.Configs = maps.Clone(s.Configs)
		out[i] = s
	}
	return out
}

// Validate checks the spec; its error names the topic and the field.
func (s Spec) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("topic %q: %s: %s", s.Name, field, fmt.Sprintf(format, args...)))
	}
	if err := ValidateName(s.Name); err != nil {
		errs = append(errs, err)
	}
	if s.Partitions < -1 {
		bad("partitions", "%d: must be at least 1 (or -1 for the broker's default)", s.Partitions)
	}
	if s.ReplicationFactor < -1 {
		bad("replication_factor", "%d: must be at least 1 (or -1 for the broker's default)", s.ReplicationFactor)
	}
	for _, k := range slices.Sorted(maps.Keys(s.Configs)) {
		if strings.TrimSpace(k) == "" {
			bad("configs", "a setting has an empty name")
		}
	}
	return errors.Join(errs...)
}

// ValidateName checks a topic name as Kafka does: 1 to 249 characters of
// [a-zA-Z0-9._-], and not "." or "..".
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("topic name: required")
	case len(name) > maxNameLen:
		return fmt.Errorf("topic name %q: longer than %d characters", name, maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("topic name %q: not allowed", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("topic name %q: %q is not allowed (only a-z A-Z 0-9 . _ -)", name, r)
		}
	}
	return nil
}

// Merge combines specs of the same name, in order: a later spec's set fields
// (Partitions, ReplicationFactor non-zero; each config) override an earlier
// one's, so that names derived from saga definitions may be given settings
// by a topics file listed after them. It fails when two specs both set a
// field to different values and neither is a derived spec without settings,
// naming both sources. The result is sorted by name.
func Merge(specs ...Spec) ([]Spec, error) {
	byName := map[string]*Spec{}
	var errs []error
	for _, s := range specs {
		cur, ok := byName[s.Name]
		if !ok {
			c := s
			c.Configs = maps.Clone(s.Configs)
			byName[s.Name] = &c
			continue
		}
		conflict := func(field string, a, b any) {
			errs = append(errs, fmt.Errorf("topic %q: %s is %v in %s but %v in %s",
				s.Name, field, a, sourceOf(*cur), b, sourceOf(s)))
		}
		if s.Partitions != 0 {
			if cur.Partitions != 0 && cur.Partitions != s.Partitions {
				conflict("partitions", cur.Partitions, s.Partitions)
			}
			cur.Partitions = s.Partitions
		}
		if s.ReplicationFactor != 0 {
			if cur.ReplicationFactor != 0 && cur.ReplicationFactor != s.ReplicationFactor {
				conflict("replication_factor", cur.ReplicationFactor, s.ReplicationFactor)
			}
			cur.ReplicationFactor = s.ReplicationFactor
		}
		for k, v := range s.Configs {
			if old, set := cur.Configs[k]; set && old != v {
				conflict("configs."+k, old, v)
			}
			if cur.Configs == nil {
				cur.Configs = map[string]string{}
			}
			cur.Configs[k] = v
		}
		if s.Source != "" && !strings.Contains(cur.Source, s.Source) {
			if cur.Source == "" {
				cur.Source = s.Source
			} else {
				cur.Source += ", " + s.Source
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	out := make([]Spec, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, *byName[name])
	}
	return out, nil
}

func sourceOf(s Spec) string {
	if s.Source == "" {
		return "(unnamed source)"
	}
	return s.Source
}

// Names returns the names of specs, in order.
func Names(specs []Spec) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Name
	}
	return out
}

// FromNames returns a spec without settings for each name.
func FromNames(source string, names ...string) []Spec {
	out := make([]Spec, len(names))
	for i, n := range names {
		out[i] = Spec{Name: n, Source: source}
	}
	return out
}
