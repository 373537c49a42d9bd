package saga

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// Registry holds definitions by name and version. It is immutable once
// built and safe for concurrent use. New sagas start with the latest
// version of their definition; in-flight sagas keep the version they
// started with, which the registry keeps serving.
type Registry struct {
	byName map[string]map[int]*Definition
	latest map[string]*Definition
	all    []*Definition
}

// TriggerRef is a trigger with the definition it starts.
type TriggerRef struct {
	// Definition is the definition the trigger starts.
	Definition *Definition
	// Trigger is the trigger.
	Trigger Trigger
}

// NewRegistry builds a registry of defs. It calls SetDefaults on each
// definition (so it modifies them) and validates it; it fails on a nil or
// invalid definition and on a duplicate name@version, with an error naming
// the definition.
func NewRegistry(defs ...*Definition) (*Registry, error) {
	r := &Registry{byName: map[string]map[int]*Definition{}, latest: map[string]*Definition{}}
	var errs []error
	for i, d := range defs {
		if d == nil {
			errs = append(errs, fmt.Errorf("saga: registry: definition %d is nil", i))
			continue
		}
		d.SetDefaults()
		if err := d.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("saga: registry: definition %s: %w", d.Ref(), err))
			continue
		}
		versions := r.byName[d.Name]
		if versions == nil {
			versions = map[int]*Definition{}
			r.byName[d.Name] = versions
		}
		if _, dup := versions[d.Version]; dup {
			errs = append(errs, fmt.Errorf("saga: registry: definition %s is registered twice", d.Ref()))
			continue
		}
		versions[d.Version] = d
		if l := r.latest[d.Name]; l == nil || d.Version > l.Version {
			r.latest[d.Name] = d
		}
		r.all = append(r.all, d)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortFunc(r.all, func(a, b *Definition) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	return r, nil
}

// Get returns the definition of name at version.
func (r *Registry) Get(name string, version int) (*Definition, bool) {
	d, ok := r.byName[name][version]
	return d, ok
}

// Latest returns the highest version of the definition called name.
func (r *Registry) Latest(name string) (*Definition, bool) {
	d, ok := r.latest[name]
	return d, ok
}

// Triggers returns the triggers of the latest version of every definition,
// ordered by definition name, then as declared. Older versions' triggers
// start nothing.
func (r *Registry) Triggers() []TriggerRef {
	var out []TriggerRef
	for _, d := range r.all {
		if r.latest[d.Name] != d {
			continue
		}
		for _, t := range d.Triggers {
			out = append(out, TriggerRef{Definition: d, Trigger: t})
		}
	}
	return out
}

// Definitions returns every definition, ordered by name, then version.
func (r *Registry) Definitions() []*Definition { return slices.Clone(r.all) }
