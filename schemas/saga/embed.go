// Package sagaschema embeds the JSON Schema of YAML saga definitions,
// definition.v1.json (draft 2020-12). It lives apart from package schemas so
// that the message schema registry never loads it.
package sagaschema

import _ "embed"

// definitionV1 is the schema file's content.
//
//go:embed definition.v1.json
var definitionV1 []byte

// DefinitionV1 returns a copy of the JSON Schema that package saga validates
// a YAML saga definition against before anything else.
func DefinitionV1() []byte { return append([]byte(nil), definitionV1...) }
