package schemas

import (
	"embed"
	"io/fs"
)

//go:embed *.json
var files embed.FS

// FS returns the message schemas, one file per type and schema version named
// <type>.v<version>.json, at the root of the returned file system: what
// messaging.SchemaRegistryConfig.FS expects. The examples are not included.
func FS() fs.FS { return files }
