package messaging

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	textmessage "golang.org/x/text/message"
)

// UnknownTypePolicy says what a SchemaRegistry does with a payload whose type
// and schema version it holds no schema for.
type UnknownTypePolicy int

const (
	// RejectUnknownTypes fails validation with an error wrapping
	// ErrUnknownType, so the message is dead-lettered. It is the default.
	RejectUnknownTypes UnknownTypePolicy = iota
	// AllowUnknownTypes lets such payloads pass unchecked. Payloads of a
	// type and version that has a schema are still checked.
	AllowUnknownTypes
)

// String returns the policy's name.
func (p UnknownTypePolicy) String() string {
	switch p {
	case RejectUnknownTypes:
		return "reject"
	case AllowUnknownTypes:
		return "allow"
	}
	return "UnknownTypePolicy(" + strconv.Itoa(int(p)) + ")"
}

// SchemaSource is one file system of schemas with the name errors call it
// by: a file is named "<Name>/<file>" in errors, e.g.
// "./contracts/billing.invoice.create.v1.json".
type SchemaSource struct {
	// Name names the source in errors, e.g. its directory. Defaults to
	// "Sources[<index>]".
	Name string
	// FS holds the schemas as SchemaRegistryConfig.FS describes. Required.
	FS fs.FS
}

// SchemaDirs returns a source per directory (os.DirFS), each named by its
// path as given, for SchemaRegistryConfig.Sources. A directory that does not
// exist or cannot be read makes NewSchemaRegistry fail naming it.
func SchemaDirs(dirs ...string) []SchemaSource {
	srcs := make([]SchemaSource, len(dirs))
	for i, d := range dirs {
		srcs[i] = SchemaSource{Name: d, FS: os.DirFS(d)}
	}
	return srcs
}

// DuplicateSchemaError says that two schema files define the same message
// type and version, so the registry could not tell which one applies.
type DuplicateSchemaError struct {
	// Key is the type and version defined twice.
	Key SchemaKey
	// First and Second are the two files, each "<source name>/<file>", in
	// the order of the sources.
	First, Second string
}

func (e *DuplicateSchemaError) Error() string {
	return "messaging: schema " + e.Key.String() + " is defined twice: " + e.First + " and " + e.Second
}

// SchemaRegistryConfig configures NewSchemaRegistry. At least one of FS and
// Sources is required.
type SchemaRegistryConfig struct {
	// FS holds the JSON Schemas, one per message type and schema version,
	// each in a file at the root of FS named "<type>.v<version>.json", e.g.
	// "sales.order.placed.v1.json". The type consists of ASCII letters,
	// digits, '.', '_' and '-', starts with a letter or digit and does not
	// end with '.' or '-'; the version is a decimal integer from 1 without
	// leading zeros. Any other file at the root whose name ends in ".json"
	// is an error; other files and subdirectories are ignored. Schemas
	// without "$schema" are read as draft 2020-12, and "format" is
	// asserted. A schema may refer ($ref) to other schemas of the registry
	// by their "$id", or by file name when neither declares an "$id", but
	// to nothing outside the registry. schemas.FS() returns dtx's own
	// schemas. FS, if set, is read as one more source named "FS", after
	// Sources. Defaults to nil.
	FS fs.FS

	// Sources are file systems of schemas, each laid out as FS is, merged
	// into one registry: a schema may refer to a schema of another source.
	// A type and version defined in two sources is an error
	// (*DuplicateSchemaError naming both files), as is a source without a
	// schema. schemas.Source() is dtx's own. Defaults to none.
	Sources []SchemaSource

	// UnknownTypes says what to do with a payload of a type and schema
	// version that no source holds a schema for, including an envelope
	// without a schema version. Defaults to RejectUnknownTypes.
	UnknownTypes UnknownTypePolicy
}

// sources returns Sources, then FS as the source "FS", with default names.
func (c *SchemaRegistryConfig) sources() []SchemaSource {
	srcs := make([]SchemaSource, 0, len(c.Sources)+1)
	for i, s := range c.Sources {
		if s.Name == "" {
			s.Name = "Sources[" + strconv.Itoa(i) + "]"
		}
		srcs = append(srcs, s)
	}
	if c.FS != nil {
		srcs = append(srcs, SchemaSource{Name: "FS", FS: c.FS})
	}
	return srcs
}

func (c *SchemaRegistryConfig) validate() error {
	var errs []error
	if c.FS == nil && len(c.Sources) == 0 {
		errs = append(errs, errors.New("FS, Sources: one of them is required"))
	}
	for i, s := range c.Sources {
		if s.FS == nil {
			errs = append(errs, fmt.Errorf("SchemaRegistryConfig.Sources[%d] (%s): FS must not be nil", i, s.Name))
		}
	}
	if c.UnknownTypes != RejectUnknownTypes && c.UnknownTypes != AllowUnknownTypes {
		errs = append(errs, fmt.Errorf("UnknownTypes: %d is neither RejectUnknownTypes nor AllowUnknownTypes", int(c.UnknownTypes)))
	}
	return errors.Join(errs...)
}

// SchemaKey names one schema: a message type and a version of its payload.
type SchemaKey struct {
	Type    string
	Version int
}

// String returns the key as in the schema's file name without ".json", e.g.
// "sales.order.placed.v1".
func (k SchemaKey) String() string {
	return k.Type + ".v" + strconv.Itoa(k.Version)
}

// SchemaRegistry validates payloads against the JSON Schema of their type and
// schema version. All schemas are compiled by NewSchemaRegistry; afterwards a
// registry does not change and is safe for concurrent use.
type SchemaRegistry struct {
	schemas map[SchemaKey]loadedSchema
	unknown UnknownTypePolicy
	printer *textmessage.Printer // words the violations
}

type loadedSchema struct {
	schema *jsonschema.Schema
	id     string // the schema's "$id", or ""
}

// schemaFileRE matches "<type>.v<version>.json"; see SchemaRegistryConfig.FS.
var schemaFileRE = regexp.MustCompile(`^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?)\.v([1-9][0-9]{0,8})\.json$`)

// schemaBase is the location of a schema that declares no "$id". It is not
// fetched: it only lets such schemas refer to one another by file name.
const schemaBase = "dtx-schema:///"

// NewSchemaRegistry loads and compiles every schema of cfg's sources. It
// fails if cfg is not valid, if a source cannot be read or holds no schema,
// if two sources define the same type and version (*DuplicateSchemaError,
// one per such type and version, joined), or if a schema file cannot be
// read, is not JSON, is not a valid schema, shares its "$id" with another or
// refers to a schema outside the registry; the error names the file as
// "<source name>/<file>".
func NewSchemaRegistry(cfg SchemaRegistryConfig) (*SchemaRegistry, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("messaging: schema registry config: %w", err)
	}

	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noLoader{})

	type file struct {
		name string // "<source>/<file>"
		key  SchemaKey
		loc  string
		id   string
	}
	var files []file
	seen := make(map[SchemaKey]string) // the file that defined a key first
	var dups []error
	for _, src := range cfg.sources() {
		entries, err := fs.ReadDir(src.FS, ".")
		if err != nil {
			// The path of os.DirFS's error is ".": the source's name says
			// more.
			var perr *fs.PathError
			if errors.As(err, &perr) && perr.Path == "." {
				err = perr.Err
			}
			return nil, fmt.Errorf("messaging: schema source %s: read schemas: %w", src.Name, err)
		}
		n := 0
		for _, ent := range entries {
			base := ent.Name()
			if ent.IsDir() || path.Ext(base) != ".json" {
				continue
			}
			name := strings.TrimSuffix(src.Name, "/") + "/" + base
			m := schemaFileRE.FindStringSubmatch(base)
			if m == nil {
				return nil, fmt.Errorf("messaging: schema file %s: name is not <type>.v<version>.json", name)
			}
			n++
			version, _ := strconv.Atoi(m[2]) // at most 9 digits: cannot fail
			key := SchemaKey{Type: m[1], Version: version}
			if first, ok := seen[key]; ok {
				dups = append(dups, &DuplicateSchemaError{Key: key, First: first, Second: name})
				continue
			}
			seen[key] = name
			raw, err := fs.ReadFile(src.FS, base)
			if err != nil {
				return nil, fmt.Errorf("messaging: schema file %s: %w", name, err)
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			if err != nil {
				return nil, fmt.Errorf("messaging: schema file %s: not JSON: %w", name, err)
			}
			// A schema without "$id" is located by its file name alone, so
			// that schemas of different sources refer to one another alike.
			f := file{name: name, key: key, loc: schemaBase + base}
			if obj, ok := doc.(map[string]any); ok {
				if id, ok := obj["$id"].(string); ok {
					f.id, f.loc = id, id
				}
			}
			if err := c.AddResource(f.loc, doc); err != nil {
				return nil, fmt.Errorf("messaging: schema file %s: %w", name, err)
			}
			files = append(files, f)
		}
		if n == 0 {
			return nil, fmt.Errorf("messaging: schema source %s: holds no <type>.v<version>.json file", src.Name)
		}
	}
	if len(dups) > 0 {
		return nil, errors.Join(dups...)
	}

	r := &SchemaRegistry{schemas: make(map[SchemaKey]loadedSchema, len(files)), unknown: cfg.UnknownTypes,
		printer: textmessage.NewPrinter(language.English),
	}
	for _, f := range files {
		sch, err := c.Compile(f.loc)
		if err != nil {
			return nil, fmt.Errorf("messaging: schema file %s: %w", f.name, err)
		}
		r.schemas[f.key] = loadedSchema{schema: sch, id: f.id}
	}
	return r, nil
}

// noLoader refuses every location not added to the compiler beforehand, so
// compiling a schema never reads files or the network.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, errors.New("not a schema of the registry's file system")
}

// Keys returns the key of every schema the registry holds, ordered by type,
// then version.
func (r *SchemaRegistry) Keys() []SchemaKey {
	keys := make([]SchemaKey, 0, len(r.schemas))
	for k := range r.schemas {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b SchemaKey) int {
		return cmp.Or(strings.Compare(a.Type, b.Type), cmp.Compare(a.Version, b.Version))
	})
	return keys
}

// HasType reports whether the registry holds a schema of typ, in any
// version.
func (r *SchemaRegistry) HasType(typ string) bool {
	for k := range r.schemas {
		if k.Type == typ {
			return true
		}
	}
	return false
}

// UnknownTypes returns what the registry does with a type it holds no
// schema for.
func (r *SchemaRegistry) UnknownTypes() UnknownTypePolicy { return r.unknown }

// SchemaID returns the "$id" of the schema of typ and version, fit for
// Envelope.DataSchema when it is an absolute URI. ok is false when the
// registry holds no such schema; id is empty when the schema declares no
// "$id".
func (r *SchemaRegistry) SchemaID(typ string, version int) (id string, ok bool) {
	s, ok := r.schemas[SchemaKey{Type: typ, Version: version}]
	return s.id, ok
}

// Validate checks payload, a JSON document, against the schema of typ and
// version. It returns nil if it conforms; a *SchemaError, which wraps
// ErrSchemaViolation, if it does not or is not JSON; and an error wrapping
// ErrUnknownType if the registry holds no schema for typ and version, unless
// it was configured with AllowUnknownTypes, in which case it returns nil.
func (r *SchemaRegistry) Validate(typ string, version int, payload []byte) error {
	s, ok := r.schemas[SchemaKey{Type: typ, Version: version}]
	if !ok {
		if r.unknown == AllowUnknownTypes {
			return nil
		}
		return unknownTypeError(typ, version)
	}
	violation := func(details ...string) error {
		return &SchemaError{Type: typ, Version: version, Details: details}
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		return violation("at '': the payload is empty")
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return violation("at '': not JSON: " + err.Error())
	}
	err = s.schema.Validate(doc)
	if err == nil {
		return nil
	}
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return violation(err.Error())
	}
	return violation(violationDetails(verr, r.printer)...)
}

// ValidateEnvelope validates e's Data against the schema of e.Type and
// e.SchemaVersion, as Validate does. A payload whose DataContentType is not
// JSON fails the schema of its type.
func (r *SchemaRegistry) ValidateEnvelope(e Envelope) error {
	if !IsJSONContentType(e.DataContentType) {
		if _, ok := r.schemas[SchemaKey{Type: e.Type, Version: e.SchemaVersion}]; ok {
			return &SchemaError{Type: e.Type, Version: e.SchemaVersion, Details: []string{
				"at '': the content type " + strconv.Quote(e.DataContentType) + " is not JSON",
			}}
		}
	}
	return r.Validate(e.Type, e.SchemaVersion, e.Data)
}

// violationDetails flattens a validation error to one line per failed
// keyword without failed sub-schemas of its own, in the error's order.
func violationDetails(verr *jsonschema.ValidationError, p *textmessage.Printer) []string {
	var details []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		d := "at '" + jsonPointer(e.InstanceLocation) + "': " + e.ErrorKind.LocalizedString(p)
		if !slices.Contains(details, d) {
			details = append(details, d)
		}
	}
	walk(verr)
	return details
}

// jsonPointer joins the tokens of a location in a JSON document into a JSON
// pointer (RFC 6901).
func jsonPointer(tokens []string) string {
	var b strings.Builder
	for _, tok := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1"))
	}
	return b.String()
}
