package topic

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// FileError is a problem of a topics file, at a line when it is known.
// Error() reads "topics.yaml:12: topic "orders": partitions: must be at
// least 1".
type FileError struct {
	// File is the file's name as given.
	File string
	// Line is the 1-based line of the problem, or 0.
	Line int
	// Msg says what is wrong.
	Msg string
}

// Error implements error.
func (e *FileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// fileDoc is the YAML document of a topics file.
type fileDoc struct {
	Defaults fileSettings `yaml:"defaults"`
	Topics   []fileTopic  `yaml:"topics"`
}

type fileSettings struct {
	Partitions        *int32         `yaml:"partitions"`
	ReplicationFactor *int16         `yaml:"replication_factor"`
	Configs           map[string]any `yaml:"configs"`
}

type fileTopic struct {
	Name         string `yaml:"name"`
	fileSettings `yaml:",inline"`
	line         int
}

// UnmarshalYAML records the line of the topic's entry.
// Node.Decode does not check for unknown keys, so it is done here.
func (t *fileTopic) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		var unknown []string
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			switch k.Value {
			case "name", "partitions", "replication_factor", "configs":
			default:
				unknown = append(unknown, fmt.Sprintf("line %d: field %s not found (a topic has name, partitions, replication_factor, configs)", k.Line, k.Value))
			}
		}
		if len(unknown) > 0 {
			return &yaml.TypeError{Errors: unknown}
		}
	}
	type plain fileTopic
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*t = fileTopic(p)
	t.line = n.Line
	return nil
}

// LoadFile reads a topics file (see the package documentation for its
// format) and returns its specs, each with Source "<path>:<line>". Every
// problem is a *FileError naming the file and, when known, the line.
func LoadFile(path string) ([]Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{File: path, Msg: err.Error()}
	}
	return ParseFile(path, data)
}

// ParseFile parses the topics file data; file names it in errors and in
// the specs' Source. Unknown keys are errors. File-level defaults apply to
// the file's topics only; what neither sets stays unset (0) for Defaults to
// fill.
func ParseFile(file string, data []byte) ([]Spec, error) {
	var doc fileDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, yamlError(file, err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)

	var errs []error
	defCfg, err := configStrings(doc.Defaults.Configs)
	if err != nil {
		errs = append(errs, &FileError{File: file, Line: keyLine(&root, "defaults"), Msg: "defaults: " + err.Error()})
	}
	seen := map[string]int{}
	specs := make([]Spec, 0, len(doc.Topics))
	for i, t := range doc.Topics {
		s := Spec{Name: t.Name, Source: fmt.Sprintf("%s:%d", file, t.line), Configs: maps.Clone(defCfg)}
		if t.Name == "" {
			errs = append(errs, &FileError{File: file, Line: t.line, Msg: fmt.Sprintf("topics[%d]: name: required", i)})
			continue
		}
		if prev, dup := seen[t.Name]; dup {
			errs = append(errs, &FileError{File: file, Line: t.line, Msg: fmt.Sprintf("topic %q: listed twice (first at line %d)", t.Name, prev)})
			continue
		}
		seen[t.Name] = t.line
		if p := firstSet(t.Partitions, doc.Defaults.Partitions); p != nil {
			s.Partitions = *p
			if *p == 0 {
				errs = append(errs, &FileError{File: file, Line: t.line, Msg: fmt.Sprintf("topic %q: partitions: must be at least 1 (or -1 for the broker's default)", t.Name)})
			}
		}
		if rf := firstSet(t.ReplicationFactor, doc.Defaults.ReplicationFactor); rf != nil {
			s.ReplicationFactor = *rf
			if *rf == 0 {
				errs = append(errs, &FileError{File: file, Line: t.line, Msg: fmt.Sprintf("topic %q: replication_factor: must be at least 1 (or -1 for the broker's default)", t.Name)})
			}
		}
		cfg, err := configStrings(t.Configs)
		if err != nil {
			errs = append(errs, &FileError{File: file, Line: t.line, Msg: fmt.Sprintf("topic %q: %v", t.Name, err)})
		}
		if len(cfg) > 0 && s.Configs == nil {
			s.Configs = map[string]string{}
		}
		maps.Copy(s.Configs, cfg)
		if err := s.Validate(); err != nil {
			errs = append(errs, &FileError{File: file, Line: t.line, Msg: err.Error()})
			continue
		}
		specs = append(specs, s)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return specs, nil
}

func firstSet[T any](vs ...*T) *T {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

// configStrings turns YAML scalars (numbers, booleans, strings) into the
// strings Kafka takes.
func configStrings(in map[string]any) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(in))
	var errs []error
	for k, v := range in {
		switch v := v.(type) {
		case string:
			out[k] = v
		case int:
			out[k] = strconv.Itoa(v)
		case int64:
			out[k] = strconv.FormatInt(v, 10)
		case uint64:
			out[k] = strconv.FormatUint(v, 10)
		case float64:
			out[k] = strconv.FormatFloat(v, 'f', -1, 64)
		case bool:
			out[k] = strconv.FormatBool(v)
		default:
			errs = append(errs, fmt.Errorf("configs.%s: must be a string, number or boolean", k))
		}
	}
	return out, errors.Join(errs...)
}

// yamlError turns a decoding error into *FileError values, one per line
// yaml.v3 reports.
func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, 0, len(te.Errors))
		for _, msg := range te.Errors {
			errs = append(errs, lineError(file, msg))
		}
		return errors.Join(errs...)
	}
	return lineError(file, err.Error())
}

// lineError parses "line N: msg" (or "yaml: line N: msg") into a FileError.
func lineError(file, msg string) error {
	rest, _ := strings.CutPrefix(msg, "yaml: ")
	if after, ok := strings.CutPrefix(rest, "line "); ok {
		num, text, found := strings.Cut(after, ":")
		if n, err := strconv.Atoi(num); found && err == nil {
			return &FileError{File: file, Line: n, Msg: strings.TrimSpace(text)}
		}
	}
	return &FileError{File: file, Msg: rest}
}

// keyLine returns the line of key in the document's top-level mapping, or 0.
func keyLine(root *yaml.Node, key string) int {
	if root == nil || len(root.Content) == 0 {
		return 0
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i].Line
		}
	}
	return 0
}
