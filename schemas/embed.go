package schemas

import (
	"embed"
	"io/fs"

	"github.com/vextrus/dtx/pkg/messaging"
)

//go:embed *.json
var files embed.FS

// SourceName is the name of Source in errors: a built-in schema file is
// "built-in/<type>.v<version>.json" there.
const SourceName = "built-in"

// FS returns the message schemas, one file per type and schema version named
// <type>.v<version>.json, at the root of the returned file system: what
// messaging.SchemaRegistryConfig.FS expects. The examples are not included.
func FS() fs.FS { return files }

// Source returns FS as a schema source named "built-in", to merge with a
// service's own schemas in messaging.SchemaRegistryConfig.Sources.
func Source() messaging.SchemaSource { return messaging.SchemaSource{Name: SourceName, FS: files} }
