// Package schemas holds the JSON Schemas (draft 2020-12) of the payloads dtx
// validates at its edges, embedded in every binary that validates them: when
// a service writes a message to the outbox and when a consumer decodes one.
// Load them with messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{
// FS: schemas.FS()}), or beside a service's own schemas with
// messaging.SchemaRegistryConfig{Sources: append([]messaging.SchemaSource{
// schemas.Source()}, messaging.SchemaDirs("./contracts")...)}.
//
// # Layout
//
// Each message type and schema version has one file, <type>.v<version>.json,
// for example sales.order.placed.v1.json, whose "$id" is
// https://github.com/vextrus/dtx/schemas/ followed by the file name. A
// message selects its schema by its CloudEvents type and its schema version
// (the schemaversion extension). The directory examples/<type>.v<version>/
// holds example payloads that conform to the schema, and its subdirectory
// invalid/ payloads that do not; the tests check both, so the examples are
// also executable documentation of each contract.
//
// # Conventions
//
// Property names are snake_case. Objects reject properties they do not
// declare (additionalProperties: false), so a typo fails at the producer
// rather than being dropped by the consumer. Money is an integer amount in
// the minor unit of an ISO 4217 currency code, never a decimal number, so no
// rounding ever happens; quantities are positive integers; times are RFC 3339
// date-times and days are dates. Every schema is self-contained: what types
// share is repeated in each file's $defs, so changing one contract never
// changes another.
//
// # Compatibility
//
// A published schema version is never edited in a way that rejects payloads
// it accepted before: a breaking change is a new file with the next version,
// and producers move to it only after every consumer holds it.
package schemas
