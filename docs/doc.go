// Package docs holds no code: its test checks that the documentation in
// README.md and docs/*.md says nothing the repository contradicts. It runs
// with every `go test ./...`.
//
// # What is checked
//
// Every fenced code block of README.md and of each docs/*.md file, by the
// first word of its info string:
//
//   - yaml or yml: the block parses as YAML (several documents separated by
//     "---" are allowed). A block whose top level is a mapping with a
//     "steps" key is a saga definition: it must also load with
//     saga.Parse, which validates it against
//     schemas/saga/definition.v1.json and then checks the definition.
//   - json: the block is valid JSON.
//   - go: the block is a whole Go file (it starts with its package clause).
//     It is written into a module of its own, which requires
//     github.com/vextrus/dtx replaced by this repository, and must pass
//     go build and go vet.
//   - go, with the info string "go fragment": the block is the body of a
//     function. It is wrapped into a package and a func _() { ... }, with
//     imports added for the packages it names (by their usual package
//     name, such as context, pgx, messaging, outbox or saga; see
//     fragmentImports in docs_test.go for the list); everything else it
//     uses it must declare itself. Then it is built and vetted as above.
//   - Any other info string (sh, text, none) is not checked. To show Go
//     that is not meant to compile, fence it as text.
//
// Every Markdown link outside code, [text](target), whose target is
// relative must name a file or directory that exists, relative to the
// Markdown file; a "#fragment" on a link to a Markdown file (or on its own,
// within the same file) must name one of that file's headings, as GitHub
// derives anchors from them (lower case, punctuation dropped, spaces to
// hyphens), or an explicit <a id="..."> anchor.
//
// Every mention of docs/<name>.md in the repository's Go, SQL, shell and
// YAML files and Markdown files (for instance "(G5, docs/guarantees.md)" in
// a doc comment) must name an existing file, and its #fragment, if any, an
// anchor of that file.
//
// # Guarantees
//
// The test fails, naming the file and the line of the block or link, when
// a YAML block does not parse, a saga definition does not load, a JSON
// block is invalid, a Go block does not build or vet, or a link or a
// docs/ reference points at nothing. New Markdown files in docs/ are
// checked without a change to the test.
//
// # How it fails
//
// The Go blocks are built with the go command found on PATH, with
// GOFLAGS=-mod=mod and GOPROXY=off: modules missing from the local module
// cache fail the build rather than being downloaded; a block may only
// import this module, the standard library and the modules this module
// requires. Before that, `go mod download` and `go list -m all` fetch
// (through GOPROXY, checked against go.sum) what a fresh module cache lacks
// of this module's dependencies and of its module graph's go.mod files. Links to absolute URLs are not followed.
package docs
