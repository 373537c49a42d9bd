package saga

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Vars are the saga's own values a mapping can refer to as $saga.id,
// $saga.correlation_id, $saga.name and $saga.version.
type Vars struct {
	// SagaID is $saga.id.
	SagaID string
	// CorrelationID is $saga.correlation_id.
	CorrelationID string
	// Name is $saga.name, the definition's name.
	Name string
	// Version is $saga.version, the definition's version.
	Version int
}

// MappingError says why a mapping could not be built. Map returns it for a
// reference to a value that is not there; ValidateTemplate for a string
// that is not a valid reference or a value that is not JSON-like.
type MappingError struct {
	// Path is the reference concerned as written ("$.order.lines.0"), or
	// "" when the problem is not a reference.
	Path string
	// Msg says what is wrong.
	Msg string
	// missing is set when the referenced value is not there (an optional
	// reference then leaves it out).
	missing bool
}

// Error implements error.
func (e *MappingError) Error() string {
	if e.Path == "" {
		return "mapping: " + e.Msg
	}
	return "mapping " + strconv.Quote(e.Path) + ": " + e.Msg
}

// Map builds a value from template and data. A template is a JSON-like
// value: map[string]any, []any, string, a number, bool or nil. A string
// that is exactly a reference is replaced by the referenced value, keeping
// its JSON type:
//
//   - "$" is the whole data object;
//   - "$.a.b.0.c" is a path into data: each part is an object key, or an
//     index when the value at that point is an array;
//   - "$saga.id", "$saga.correlation_id", "$saga.name", "$saga.version" are
//     the fields of vars;
//   - "$item" and "$item.a.b" are the current element (and paths into it)
//     inside the "$map" of a "$each" (below).
//
// A reference ending in "?" is optional: when its value is not there, the
// object key that holds it is left out (an array element, dropped; at the
// top, nil) instead of failing.
//
// An object with exactly the keys "$each" and "$map" reshapes a list:
// "$each" is a reference to an array, and the result is an array with
// "$map" mapped once per element, "$item" being that element. For example
// {"$each": "$.lines", "$map": {"sku": "$item.sku", "quantity":
// "$item.quantity"}} keeps two fields of each line.
//
// A string starting with "$$" is the literal string without its first "$";
// any other string starting with "$" is an error. Other strings, numbers
// and bools are literals; maps and arrays are mapped element by element
// (map keys are literal). Referenced values are copied, so the result
// shares no maps or slices with data or template. A reference to a value
// that is not there is a *MappingError naming the path.
func Map(template any, data map[string]any, vars Vars) (any, error) {
	v, _, err := mapValue(template, data, vars, nil, false)
	return v, err
}

// mapValue is Map with the current "$each" element; omit reports an
// optional reference whose value is not there.
func mapValue(template any, data map[string]any, vars Vars, item any, inEach bool) (v any, omit bool, err error) {
	switch t := template.(type) {
	case map[string]any:
		if each, ok := eachOf(t); ok {
			list, omit, err := mapValue(each, data, vars, item, inEach)
			if err != nil || omit {
				return nil, omit, err
			}
			elems, ok := list.([]any)
			if !ok {
				return nil, false, &MappingError{Path: each, Msg: fmt.Sprintf("$each needs an array, got %s", jsonKind(list))}
			}
			out := make([]any, 0, len(elems))
			for _, e := range elems {
				m, omit, err := mapValue(t["$map"], data, vars, e, true)
				if err != nil {
					return nil, false, err
				}
				if !omit {
					out = append(out, m)
				}
			}
			return out, false, nil
		}
		out := make(map[string]any, len(t))
		for k, v := range t {
			m, omit, err := mapValue(v, data, vars, item, inEach)
			if err != nil {
				return nil, false, err
			}
			if !omit {
				out[k] = m
			}
		}
		return out, false, nil
	case []any:
		out := make([]any, 0, len(t))
		for _, v := range t {
			m, omit, err := mapValue(v, data, vars, item, inEach)
			if err != nil {
				return nil, false, err
			}
			if !omit {
				out = append(out, m)
			}
		}
		return out, false, nil
	case string:
		if !strings.HasPrefix(t, "$") {
			return t, false, nil
		}
		if strings.HasPrefix(t, "$$") {
			return t[1:], false, nil
		}
		ref, optional := strings.CutSuffix(t, "?")
		v, err := resolve(ref, data, vars, item, inEach)
		var merr *MappingError
		if optional && errors.As(err, &merr) && merr.missing {
			return nil, true, nil
		}
		return v, false, err
	default:
		if err := checkLiteral(template); err != nil {
			return nil, false, err
		}
		return template, false, nil
	}
}

// eachOf reports whether t is a "$each" object and returns its reference.
func eachOf(t map[string]any) (string, bool) {
	each, ok := t["$each"].(string)
	if !ok || len(t) != 2 {
		return "", false
	}
	_, ok = t["$map"]
	return each, ok
}

// ValidateTemplate checks a template's syntax without data: every string
// starting with a single "$" must be a well-formed reference ("$", "$.a.b",
// one of the $saga fields, or "$item..." inside a "$map"), optionally
// ending in "?", and every value must be JSON-like.
func ValidateTemplate(template any) error {
	return validateTemplate(template, false)
}

func validateTemplate(template any, inEach bool) error {
	switch t := template.(type) {
	case map[string]any:
		if each, ok := eachOf(t); ok {
			if err := validateTemplate(each, inEach); err != nil {
				return err
			}
			if !strings.HasPrefix(each, "$") || strings.HasPrefix(each, "$$") {
				return &MappingError{Path: each, Msg: "$each needs a reference to an array"}
			}
			return validateTemplate(t["$map"], true)
		}
		if _, ok := t["$each"]; ok {
			return &MappingError{Msg: `"$each" needs a reference string and exactly one sibling, "$map"`}
		}
		for _, v := range t {
			if err := validateTemplate(v, inEach); err != nil {
				return err
			}
		}
		return nil
	case []any:
		for _, v := range t {
			if err := validateTemplate(v, inEach); err != nil {
				return err
			}
		}
		return nil
	case string:
		if !strings.HasPrefix(t, "$") || strings.HasPrefix(t, "$$") {
			return nil
		}
		ref, _ := strings.CutSuffix(t, "?")
		field, _, err := parseReference(ref)
		if err == nil && field == "item" && !inEach {
			return &MappingError{Path: t, Msg: `"$item" is only defined inside the "$map" of a "$each"`}
		}
		return err
	default:
		return checkLiteral(template)
	}
}

// validateReference checks that s is a reference, not a literal.
func validateReference(s string) error {
	if !strings.HasPrefix(s, "$") || strings.HasPrefix(s, "$$") {
		return &MappingError{Path: s, Msg: `not a reference: must be "$", "$.path" or "$saga.<field>"`}
	}
	_, _, err := parseReference(s)
	return err
}

// sagaVars are the fields $saga.<field> may name.
var sagaVars = []string{"id", "correlation_id", "name", "version"}

// parseReference splits a reference into its saga field (for $saga.x) or
// its path parts (for $ and $.a.b).
func parseReference(ref string) (sagaField string, path []string, err error) {
	switch {
	case ref == "$":
		return "", nil, nil
	case ref == "$item":
		return "item", nil, nil
	case strings.HasPrefix(ref, "$item."):
		parts := strings.Split(ref[len("$item."):], ".")
		for _, p := range parts {
			if p == "" {
				return "", nil, &MappingError{Path: ref, Msg: "empty path element"}
			}
		}
		return "item", parts, nil
	case strings.HasPrefix(ref, "$saga."):
		f := strings.TrimPrefix(ref, "$saga.")
		for _, v := range sagaVars {
			if f == v {
				return f, nil, nil
			}
		}
		return "", nil, &MappingError{Path: ref, Msg: "unknown saga field: want one of $saga.id, $saga.correlation_id, $saga.name, $saga.version"}
	case strings.HasPrefix(ref, "$."):
		parts := strings.Split(ref[2:], ".")
		for _, p := range parts {
			if p == "" {
				return "", nil, &MappingError{Path: ref, Msg: "empty path element"}
			}
		}
		return "", parts, nil
	default:
		return "", nil, &MappingError{Path: ref, Msg: `not a reference: want "$", "$.path" or "$saga.<field>" (write "$$" for a literal "$")`}
	}
}

func resolve(ref string, data map[string]any, vars Vars, item any, inEach bool) (any, error) {
	field, path, err := parseReference(ref)
	if err != nil {
		return nil, err
	}
	var cur any = data
	if data == nil {
		cur = map[string]any{}
	}
	switch field {
	case "item":
		if !inEach {
			return nil, &MappingError{Path: ref, Msg: `"$item" is only defined inside the "$map" of a "$each"`}
		}
		cur = item
	case "id":
		return vars.SagaID, nil
	case "correlation_id":
		return vars.CorrelationID, nil
	case "name":
		return vars.Name, nil
	case "version":
		return vars.Version, nil
	}
	for i, p := range path {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[p]
			if !ok {
				return nil, &MappingError{Path: ref, Msg: fmt.Sprintf("no key %q at %s", p, pathPrefix(path[:i])), missing: true}
			}
			cur = v
		case []any:
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 || n >= len(c) {
				return nil, &MappingError{Path: ref, Msg: fmt.Sprintf("no index %s in the array of %d at %s", p, len(c), pathPrefix(path[:i])), missing: true}
			}
			cur = c[n]
		default:
			return nil, &MappingError{Path: ref, Msg: fmt.Sprintf("%s is %s, not an object or array", pathPrefix(path[:i]), jsonKind(cur))}
		}
	}
	return copyValue(cur), nil
}

func pathPrefix(parts []string) string {
	if len(parts) == 0 {
		return "$"
	}
	return "$." + strings.Join(parts, ".")
}

// jsonKind names the JSON type of a JSON-like value.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	default:
		return "a number"
	}
}

// checkLiteral accepts the scalar JSON-like types.
func checkLiteral(v any) error {
	switch v.(type) {
	case nil, bool, string, json.Number,
		float64, float32, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return nil
	default:
		return &MappingError{Msg: fmt.Sprintf("unsupported value of type %T: use map[string]any, []any, string, a number, bool or nil", v)}
	}
}

// copyValue deep-copies the maps and slices of a JSON-like value.
func copyValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = copyValue(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = copyValue(e)
		}
		return out
	default:
		return v
	}
}

// mapKey builds a record key from a Key mapping; "" means the saga id.
func mapKey(key string, data map[string]any, vars Vars) (string, error) {
	if key == "" {
		return vars.SagaID, nil
	}
	v, err := Map(key, data, vars)
	if err != nil {
		return "", err
	}
	s, err := scalarString(v)
	if err != nil {
		return "", &MappingError{Path: key, Msg: "key " + err.Error()}
	}
	return s, nil
}

// scalarString renders a string or number as a string.
func scalarString(v any) (string, error) {
	switch t := v.(type) {
	case string:
		if t == "" {
			return "", fmt.Errorf("is empty")
		}
		return t, nil
	case bool, map[string]any, []any, nil:
		return "", fmt.Errorf("is %s, want a string or a number", jsonKind(v))
	default:
		b, err := json.Marshal(t)
		if err != nil {
			return "", fmt.Errorf("cannot be rendered: %w", err)
		}
		return string(b), nil
	}
}

// SagaIDFrom returns the id of the saga a trigger message starts: the
// trigger's SagaID reference evaluated on the message's payload, or
// messageID when SagaID is "". The reference must yield a non-empty string
// or a number.
func (t Trigger) SagaIDFrom(payload map[string]any, messageID string) (string, error) {
	if t.SagaID == "" {
		if messageID == "" {
			return "", &MappingError{Msg: "saga id: the message has no id"}
		}
		return messageID, nil
	}
	v, err := Map(t.SagaID, payload, Vars{})
	if err != nil {
		return "", err
	}
	s, err := scalarString(v)
	if err != nil {
		return "", &MappingError{Path: t.SagaID, Msg: "saga id " + err.Error()}
	}
	return s, nil
}

// InitialData returns the initial saga data from a trigger message's
// payload: the trigger's Data mapping evaluated on it (vars give the $saga
// fields), or a copy of the payload when Data is nil. The mapping must
// yield an object.
func (t Trigger) InitialData(payload map[string]any, vars Vars) (map[string]any, error) {
	if t.Data == nil {
		m, _ := copyValue(payload).(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		return m, nil
	}
	v, err := Map(t.Data, payload, vars)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &MappingError{Msg: fmt.Sprintf("trigger data is %s, want an object", jsonKind(v))}
	}
	return m, nil
}
