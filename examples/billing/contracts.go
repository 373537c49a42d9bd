package main

import "embed"

// contracts holds the service's JSON Schemas, one per message type and
// version (<type>.v<version>.json), built into the binary. The orchestrator
// reads the same files with --schemas contracts.
//
//go:embed contracts/*.json
var contracts embed.FS
