package saga

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"go.yaml.in/yaml/v3"

	sagaschema "github.com/vextrus/dtx/schemas/saga"
)

// definitionSchema compiles the embedded JSON Schema of YAML definitions
// once; the compiled schema is immutable and safe for concurrent use.
var definitionSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	const loc = "https://github.com/vextrus/dtx/schemas/saga/definition.v1.json"
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(sagaschema.DefinitionV1()))
	if err != nil {
		return nil, fmt.Errorf("saga: definition schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(loc, doc); err != nil {
		return nil, fmt.Errorf("saga: definition schema: %w", err)
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("saga: definition schema: %w", err)
	}
	return sch, nil
})

// Parse reads one saga definition from YAML. file names the source in
// errors. The document is first validated against the JSON Schema
// schemas/saga/definition.v1.json, then defaults are set and the definition
// is validated (Definition.Validate). Every problem is a *DefinitionError
// naming the file and, where it applies, the step and field; several are
// joined with errors.Join. Durations are Go duration strings ("30s", "5m").
//
// The YAML keys are the snake_case names of the Go fields: name, version,
// description, timeout, triggers (topic, type, saga_id, data), steps (name,
// action, success, failure, reply_into, timeout, retry, compensation);
// commands have topic, type, key and payload; compensations add success,
// failure, timeout and retry; retry policies have attempts, backoff,
// multiplier and max_backoff.
func Parse(file string, data []byte) (*Definition, error) {
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, &DefinitionError{File: file, Msg: "not YAML: " + err.Error()}
	}
	if raw == nil {
		return nil, &DefinitionError{File: file, Msg: "empty document"}
	}
	doc, err := normalizeYAML(raw)
	if err != nil {
		return nil, &DefinitionError{File: file, Msg: err.Error()}
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, &DefinitionError{File: file, Msg: "not representable as JSON: " + err.Error()}
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, &DefinitionError{File: file, Msg: "not representable as JSON: " + err.Error()}
	}
	sch, err := definitionSchema()
	if err != nil {
		return nil, err
	}
	if err := sch.Validate(inst); err != nil {
		var verr *jsonschema.ValidationError
		if !errors.As(err, &verr) {
			return nil, &DefinitionError{File: file, Msg: err.Error()}
		}
		return nil, joinDefinitionErrors(file, schemaProblems(verr, inst))
	}

	var fd fileDefinition
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&fd); err != nil {
		return nil, &DefinitionError{File: file, Msg: err.Error()}
	}
	def, errs := fd.definition()
	if len(errs) > 0 {
		return nil, joinDefinitionErrors(file, errs)
	}
	def.SetDefaults()
	if err := joinDefinitionErrors(file, def.problems()); err != nil {
		return nil, err
	}
	return def, nil
}

// LoadFile reads and parses the definition in the file at path; errors name
// the file as path.
func LoadFile(path string) (*Definition, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("saga: %w", err)
	}
	return Parse(path, data)
}

// LoadDir parses every *.yaml and *.yml file directly in dir, in file name
// order. If any file fails, it returns nil and the errors.Join of every
// file's errors.
func LoadDir(dir string) ([]*Definition, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("saga: %w", err)
	}
	var defs []*Definition
	var errs []error
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		d, err := LoadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		defs = append(defs, d)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return defs, nil
}

// normalizeYAML turns a decoded YAML value into a JSON-like one.
func normalizeYAML(v any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			n, err := normalizeYAML(e)
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			n, err := normalizeYAML(e)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprint(k)] = n
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			n, err := normalizeYAML(e)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case time.Time:
		return t.Format(time.RFC3339Nano), nil
	case float64:
		if t != t || t > 1e308 || t < -1e308 {
			return nil, fmt.Errorf("the number %v is not representable in JSON", t)
		}
		return t, nil
	default:
		return v, nil
	}
}

// schemaProblems turns the leaves of a schema validation error into
// definition errors naming the step and field.
func schemaProblems(verr *jsonschema.ValidationError, inst any) []DefinitionError {
	type located struct {
		loc []string
		msg string
	}
	var leaves []located
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		switch k := e.ErrorKind.(type) {
		case *kind.Required:
			for _, p := range k.Missing {
				leaves = append(leaves, located{append(slices.Clone(e.InstanceLocation), p), "required"})
			}
		case *kind.AdditionalProperties:
			for _, p := range k.Properties {
				leaves = append(leaves, located{append(slices.Clone(e.InstanceLocation), p), "unknown field"})
			}
		case *kind.Pattern:
			msg := fmt.Sprintf("%q does not match %s", k.Got, k.Want)
			if strings.Contains(k.Want, "ms|s|m|h") {
				msg = fmt.Sprintf("%q is not a duration such as \"30s\" or \"1m30s\"", k.Got)
			}
			leaves = append(leaves, located{slices.Clone(e.InstanceLocation), msg})
		default:
			msg := (&jsonschema.ValidationError{ErrorKind: e.ErrorKind}).Error()
			msg = strings.TrimPrefix(msg, "at '': ")
			leaves = append(leaves, located{slices.Clone(e.InstanceLocation), msg})
		}
	}
	walk(verr)
	slices.SortStableFunc(leaves, func(a, b located) int {
		return slices.Compare(a.loc, b.loc)
	})
	var errs []DefinitionError
	for _, l := range leaves {
		step, field := locate(l.loc, inst)
		e := DefinitionError{Step: step, Field: field, Msg: l.msg}
		if !slices.Contains(errs, e) {
			errs = append(errs, e)
		}
	}
	return errs
}

// locate maps an instance location such as /steps/2/action/topic to the
// step's name and the field within it ("action.topic"). A step without a
// usable name is named by its index in the field ("steps[2].name").
func locate(loc []string, inst any) (step, field string) {
	if len(loc) >= 2 && loc[0] == "steps" {
		if i, err := strconv.Atoi(loc[1]); err == nil {
			if name := stepName(inst, i); name != "" {
				return name, fieldPath(loc[2:])
			}
			return "", fieldPath(loc)
		}
	}
	return "", fieldPath(loc)
}

func stepName(inst any, i int) string {
	doc, _ := inst.(map[string]any)
	steps, _ := doc["steps"].([]any)
	if i < 0 || i >= len(steps) {
		return ""
	}
	s, _ := steps[i].(map[string]any)
	name, _ := s["name"].(string)
	if !stepNameRE.MatchString(name) {
		return ""
	}
	return name
}

// fieldPath spells a location the YAML way: "triggers[0].topic".
func fieldPath(loc []string) string {
	var b strings.Builder
	for i, tok := range loc {
		if _, err := strconv.Atoi(tok); err == nil && i > 0 {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

// The YAML (JSON) shape of a definition, checked by the schema first.
type (
	fileDefinition struct {
		Name        string        `json:"name"`
		Version     int           `json:"version"`
		Description string        `json:"description"`
		Timeout     string        `json:"timeout"`
		Triggers    []fileTrigger `json:"triggers"`
		Steps       []fileStep    `json:"steps"`
	}
	fileTrigger struct {
		Topic  string `json:"topic"`
		Type   string `json:"type"`
		SagaID string `json:"saga_id"`
		Data   any    `json:"data"`
	}
	fileCommand struct {
		Topic   string `json:"topic"`
		Type    string `json:"type"`
		Key     string `json:"key"`
		Payload any    `json:"payload"`
	}
	fileRetry struct {
		Attempts   int     `json:"attempts"`
		Backoff    string  `json:"backoff"`
		Multiplier float64 `json:"multiplier"`
		MaxBackoff string  `json:"max_backoff"`
	}
	fileStep struct {
		Name         string            `json:"name"`
		Action       fileCommand       `json:"action"`
		Success      []string          `json:"success"`
		Failure      []string          `json:"failure"`
		ReplyInto    string            `json:"reply_into"`
		Timeout      string            `json:"timeout"`
		Retry        fileRetry         `json:"retry"`
		Compensation *fileCompensation `json:"compensation"`
	}
	fileCompensation struct {
		fileCommand
		Success []string  `json:"success"`
		Failure []string  `json:"failure"`
		Timeout string    `json:"timeout"`
		Retry   fileRetry `json:"retry"`
	}
)

func (fd *fileDefinition) definition() (*Definition, []DefinitionError) {
	var errs []DefinitionError
	dur := func(step, field, s string) time.Duration {
		if s == "" {
			return 0
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			errs = append(errs, DefinitionError{Step: step, Field: field, Msg: err.Error()})
		} else if d < 0 {
			errs = append(errs, DefinitionError{Step: step, Field: field, Msg: "must not be negative"})
		}
		return d
	}
	retry := func(step, field string, r fileRetry) RetryPolicy {
		return RetryPolicy{
			Attempts:   r.Attempts,
			Backoff:    dur(step, field+".backoff", r.Backoff),
			Multiplier: r.Multiplier,
			MaxBackoff: dur(step, field+".max_backoff", r.MaxBackoff),
		}
	}
	d := &Definition{
		Name:        fd.Name,
		Version:     fd.Version,
		Description: fd.Description,
		Timeout:     dur("", "timeout", fd.Timeout),
	}
	for _, t := range fd.Triggers {
		d.Triggers = append(d.Triggers, Trigger{Topic: t.Topic, Type: t.Type, SagaID: t.SagaID, Data: numbers(t.Data)})
	}
	for _, s := range fd.Steps {
		st := Step{
			Name:      s.Name,
			Action:    Command{Topic: s.Action.Topic, Type: s.Action.Type, Key: s.Action.Key, Payload: numbers(s.Action.Payload)},
			Success:   s.Success,
			Failure:   s.Failure,
			ReplyInto: s.ReplyInto,
			Timeout:   dur(s.Name, "timeout", s.Timeout),
			Retry:     retry(s.Name, "retry", s.Retry),
		}
		if c := s.Compensation; c != nil {
			st.Compensation = &Compensation{
				Command: Command{Topic: c.Topic, Type: c.Type, Key: c.Key, Payload: numbers(c.Payload)},
				Success: c.Success,
				Failure: c.Failure,
				Timeout: dur(s.Name, "compensation.timeout", c.Timeout),
				Retry:   retry(s.Name, "compensation.retry", c.Retry),
			}
		}
		d.Steps = append(d.Steps, st)
	}
	return d, errs
}

// numbers replaces the json.Numbers of a decoded template with int64 or
// float64.
func numbers(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = numbers(e)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = numbers(e)
		}
		return t
	case json.Number:
		if n, err := t.Int64(); err == nil {
			return n
		}
		f, _ := t.Float64()
		return f
	default:
		return v
	}
}
