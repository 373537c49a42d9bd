package docs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/vextrus/dtx/pkg/saga"
)

// block is one fenced code block of a Markdown file.
type block struct {
	file string // path as reported, relative to the repository root
	line int    // line of the opening fence, 1-based
	info string // the info string, trimmed
	body string
}

// lang is the first word of the info string, lower case.
func (b block) lang() string {
	f := strings.Fields(b.info)
	if len(f) == 0 {
		return ""
	}
	return strings.ToLower(f[0])
}

// where names the block in failures.
func (b block) where() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

// link is one Markdown link [text](target) outside code.
type link struct {
	file   string
	line   int
	target string
}

var fenceRE = regexp.MustCompile("^ {0,3}(`{3,}|~{3,})(.*)$")

// parseMarkdown returns the fenced code blocks and the links of a Markdown
// document. An unclosed fence runs to the end of the document, as in
// CommonMark.
func parseMarkdown(file, text string) ([]block, []link) {
	var blocks []block
	var links []link
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		m := fenceRE.FindStringSubmatch(lines[i])
		if m == nil || (m[1][0] == '`' && strings.Contains(m[2], "`")) {
			links = append(links, linksOf(file, i+1, lines[i])...)
			continue
		}
		fence := m[1]
		b := block{file: file, line: i + 1, info: strings.TrimSpace(m[2])}
		var body []string
		for i++; i < len(lines); i++ {
			t := strings.TrimSpace(lines[i])
			if strings.HasPrefix(t, fence[:1]) && strings.Trim(t, fence[:1]) == "" && len(t) >= len(fence) {
				break
			}
			body = append(body, lines[i])
		}
		b.body = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, b)
	}
	return blocks, links
}

var (
	codeSpanRE = regexp.MustCompile("`+[^`]*`+")
	linkRE     = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
)

// linksOf returns the link targets of one line outside code blocks,
// ignoring code spans.
func linksOf(file string, line int, s string) []link {
	s = codeSpanRE.ReplaceAllString(s, "")
	var out []link
	for _, m := range linkRE.FindAllStringSubmatch(s, -1) {
		out = append(out, link{file: file, line: line, target: m[1]})
	}
	return out
}

var (
	headingRE  = regexp.MustCompile(`^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
	htmlIDRE   = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
	mdMarkupRE = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

// anchors returns the anchors GitHub gives a Markdown document: one per
// heading (lower case, punctuation dropped, spaces to hyphens, "-1", "-2"
// for repeats) and every explicit <a id="..."> or <a name="...">.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	blocks, _ := parseMarkdown("", text)
	inBlock := map[int]bool{}
	lines := strings.Split(text, "\n")
	for _, b := range blocks {
		n := strings.Count(b.body, "\n") + 1
		for l := b.line; l <= b.line+n && l <= len(lines); l++ {
			inBlock[l] = true
		}
	}
	for i, l := range lines {
		for _, m := range htmlIDRE.FindAllStringSubmatch(l, -1) {
			out[m[1]] = true
		}
		if inBlock[i+1] {
			continue
		}
		m := headingRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		s := slug(m[1])
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// slug is GitHub's anchor of a heading's text.
func slug(heading string) string {
	heading = mdMarkupRE.ReplaceAllString(heading, "$1")
	heading = htmlIDRE.ReplaceAllString(heading, "")
	var sb strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			sb.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// checkYAML parses a yaml block; a saga definition must also load.
func checkYAML(b block) error {
	dec := yaml.NewDecoder(strings.NewReader(b.body))
	docs := 0
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: YAML does not parse: %w", b.where(), err)
		}
		docs++
		if m, ok := v.(map[string]any); ok {
			if _, saga := m["steps"]; saga && docs == 1 {
				if _, err := parseSaga(b); err != nil {
					return fmt.Errorf("%s: saga definition does not load: %w", b.where(), err)
				}
			}
		}
	}
	return nil
}

func parseSaga(b block) (*saga.Definition, error) {
	return saga.Parse(b.where(), []byte(b.body))
}

// checkJSON checks a json block.
func checkJSON(b block) error {
	var v any
	if err := json.Unmarshal([]byte(b.body), &v); err != nil {
		return fmt.Errorf("%s: invalid JSON: %w", b.where(), err)
	}
	return nil
}

// fragmentImports are the packages a "go fragment" block may name without
// importing them, by the name it uses.
var fragmentImports = map[string]string{
	"context":      "context",
	"errors":       "errors",
	"fmt":          "fmt",
	"http":         "net/http",
	"json":         "encoding/json",
	"log":          "log",
	"os":           "os",
	"slog":         "log/slog",
	"strings":      "strings",
	"time":         "time",
	"pgx":          "github.com/jackc/pgx/v5",
	"pgxpool":      "github.com/jackc/pgx/v5/pgxpool",
	"message":      "github.com/ThreeDotsLabs/watermill/message",
	"watermill":    "github.com/ThreeDotsLabs/watermill",
	"messaging":    "github.com/vextrus/dtx/pkg/messaging",
	"kafka":        "github.com/vextrus/dtx/pkg/messaging/kafka",
	"middleware":   "github.com/vextrus/dtx/pkg/messaging/middleware",
	"outbox":       "github.com/vextrus/dtx/pkg/messaging/outbox",
	"inbox":        "github.com/vextrus/dtx/pkg/messaging/inbox",
	"idempotency":  "github.com/vextrus/dtx/pkg/messaging/idempotency",
	"eventstore":   "github.com/vextrus/dtx/pkg/eventstore",
	"postgres":     "github.com/vextrus/dtx/pkg/eventstore/postgres",
	"projection":   "github.com/vextrus/dtx/pkg/projection",
	"saga":         "github.com/vextrus/dtx/pkg/saga",
	"sagatest":     "github.com/vextrus/dtx/pkg/saga/sagatest",
	"orchestrator": "github.com/vextrus/dtx/pkg/saga/orchestrator",
	"participant":  "github.com/vextrus/dtx/pkg/saga/participant",
	"schemas":      "github.com/vextrus/dtx/schemas",
	"telemetry":    "github.com/vextrus/dtx/pkg/telemetry",
}

// goSource returns the Go file a go block stands for.
func goSource(b block) (string, error) {
	if !slices.Contains(strings.Fields(b.info)[1:], "fragment") {
		return b.body, nil
	}
	wrapped := "package fragment\n\nfunc _() {\n" + b.body + "}\n"
	f, err := parser.ParseFile(token.NewFileSet(), b.where(), wrapped, parser.SkipObjectResolution)
	if err != nil {
		return "", fmt.Errorf("%s: Go fragment does not parse: %w", b.where(), err)
	}
	declared := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			if n.Tok == token.DEFINE {
				for _, l := range n.Lhs {
					if id, ok := l.(*ast.Ident); ok {
						declared[id.Name] = true
					}
				}
			}
		case *ast.ValueSpec:
			for _, id := range n.Names {
				declared[id.Name] = true
			}
		case *ast.Field:
			for _, id := range n.Names {
				declared[id.Name] = true
			}
		}
		return true
	})
	used := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && !declared[id.Name] {
				if _, known := fragmentImports[id.Name]; known {
					used[id.Name] = true
				}
			}
		}
		return true
	})
	var imports []string
	for name := range used {
		imports = append(imports, fmt.Sprintf("\t%s %q\n", name, fragmentImports[name]))
	}
	sort.Strings(imports)
	src := "package fragment\n\n"
	if len(imports) > 0 {
		src += "import (\n" + strings.Join(imports, "") + ")\n\n"
	}
	return src + "func _() {\n" + b.body + "}\n", nil
}

// checkGo builds and vets the go blocks, each as a package of one
// temporary module that requires this repository's module from root.
func checkGo(t *testing.T, root string, blocks []block) []error {
	t.Helper()
	if len(blocks) == 0 {
		return nil
	}
	goCmd, err := exec.LookPath("go")
	require.NoError(t, err, "the go command is needed to build the Go blocks")
	dir := t.TempDir()
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	require.NotNil(t, goVersion, "go.mod has no go directive")
	gomod := fmt.Sprintf("module doccheck.example\n\ngo %s\n\nrequire github.com/vextrus/dtx v0.0.0\n\nreplace github.com/vextrus/dtx => %s\n",
		goVersion[1], root)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644))
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644))

	var errs []error
	byDir := map[string]block{}
	for i, b := range blocks {
		src, err := goSource(b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pkg := fmt.Sprintf("b%03d", i)
		byDir[pkg] = b
		require.NoError(t, os.MkdirAll(filepath.Join(dir, pkg), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, pkg, "block.go"), []byte(src), 0o644))
	}
	if len(byDir) == 0 {
		return errs
	}
	loadModuleGraph(t, goCmd, root)
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local")
	for _, args := range [][]string{{"build", "./..."}, {"vet", "./..."}} {
		cmd := exec.Command(goCmd, args...)
		cmd.Dir = dir
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err == nil {
			continue
		}
		// Name each failing block by its Markdown file and line.
		msg := string(out)
		var named []string
		for pkg, b := range byDir {
			if strings.Contains(msg, pkg+"/") || strings.Contains(msg, "/"+pkg+"\n") {
				named = append(named, b.where())
				msg = strings.ReplaceAll(msg, pkg+"/block.go", b.where()+" (block)")
			}
		}
		sort.Strings(named)
		errs = append(errs, fmt.Errorf("go %s of the Go blocks %v failed: %w\n%s", args[0], named, err, msg))
		break // vet after a failed build repeats the build errors
	}
	return errs
}

// markdownFiles returns README.md and docs/*.md of root, relative to it.
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	files := []string{"README.md"}
	more, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	require.NoError(t, err)
	for _, f := range more {
		rel, err := filepath.Rel(root, f)
		require.NoError(t, err)
		files = append(files, filepath.ToSlash(rel))
	}
	return files
}

// checkLink checks a relative link of the Markdown file md (relative to
// root).
func checkLink(root string, l link, anchorsOf func(string) (map[string]bool, error)) error {
	target := l.target
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return nil
	}
	path, frag, _ := strings.Cut(target, "#")
	file := l.file
	if path != "" {
		file = filepath.ToSlash(filepath.Join(filepath.Dir(l.file), path))
		if strings.HasPrefix(file, "../") || filepath.IsAbs(path) {
			return fmt.Errorf("%s:%d: link %q leaves the repository", l.file, l.line, target)
		}
		if _, err := os.Stat(filepath.Join(root, file)); err != nil {
			return fmt.Errorf("%s:%d: link %q: no such file or directory %s", l.file, l.line, target, file)
		}
	}
	if frag == "" || !strings.HasSuffix(file, ".md") {
		return nil
	}
	a, err := anchorsOf(file)
	if err != nil {
		return fmt.Errorf("%s:%d: link %q: %w", l.file, l.line, target, err)
	}
	if !a[frag] {
		return fmt.Errorf("%s:%d: link %q: %s has no heading or anchor %q", l.file, l.line, target, file, frag)
	}
	return nil
}

// repoRoot is the repository root: the parent of this package's directory.
// moduleGraph loads the module's whole graph once per test binary.
var moduleGraph struct {
	once sync.Once
	out  []byte
	err  error
}

// loadModuleGraph makes sure the module cache holds the modules this one
// builds with and the go.mod file of every module in its graph, fetching
// the missing ones through the environment's GOPROXY (checked against
// go.sum). The go commands of these
// tests run with GOPROXY=off, so that a Go block may not pull in a module
// this one does not require; but `go doc`, and a build outside this module,
// load the whole graph, and a fresh machine's `go test` fetches only the
// go.mod files its own packages need.
func loadModuleGraph(t *testing.T, goCmd, root string) {
	t.Helper()
	moduleGraph.once.Do(func() {
		for _, args := range [][]string{{"mod", "download"}, {"list", "-m", "all"}} {
			cmd := exec.Command(goCmd, args...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOWORK=off", "GOTOOLCHAIN=local")
			if moduleGraph.out, moduleGraph.err = cmd.CombinedOutput(); moduleGraph.err != nil {
				moduleGraph.err = fmt.Errorf("go %s: %w", strings.Join(args, " "), moduleGraph.err)
				return
			}
		}
	})
	require.NoError(t, moduleGraph.err, "loading the module graph: %s", moduleGraph.out)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the repository root has no go.mod")
	return root
}

func anchorReader(root string) func(string) (map[string]bool, error) {
	cache := map[string]map[string]bool{}
	return func(file string) (map[string]bool, error) {
		if a, ok := cache[file]; ok {
			return a, nil
		}
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			return nil, err
		}
		cache[file] = anchors(string(data))
		return cache[file], nil
	}
}

// checkMarkdown checks every block and link of the files; Go blocks are
// collected into goBlocks for one build.
func checkMarkdown(root string, files []string) (errs []error, goBlocks []block) {
	anchorsOf := anchorReader(root)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		blocks, links := parseMarkdown(f, string(data))
		for _, b := range blocks {
			switch b.lang() {
			case "yaml", "yml":
				errs = append(errs, checkYAML(b))
			case "json":
				errs = append(errs, checkJSON(b))
			case "go":
				if isExcerpt(b) {
					errs = append(errs, checkExcerpt(root, b))
					continue
				}
				goBlocks = append(goBlocks, b)
			}
		}
		for _, l := range links {
			errs = append(errs, checkLink(root, l, anchorsOf))
		}
	}
	return slices.DeleteFunc(errs, func(e error) bool { return e == nil }), goBlocks
}

// isExcerpt reports whether b is fenced as "go excerpt PATH".
func isExcerpt(b block) bool {
	f := strings.Fields(b.info)
	return len(f) >= 2 && f[1] == "excerpt"
}

// trailingCommentRE matches a trailing line comment after code.
var trailingCommentRE = regexp.MustCompile(`\s+//.*$`)

// excerptLine returns the code of one line of an excerpt or of its source,
// without indentation and trailing comment; "" for a line that is blank, a
// comment or an elision ("...").
func excerptLine(l string) string {
	l = strings.TrimSpace(trailingCommentRE.ReplaceAllString(l, ""))
	if l == "" || strings.HasPrefix(l, "//") || strings.HasPrefix(l, "...") {
		return ""
	}
	return strings.Join(strings.Fields(l), " ")
}

// checkExcerpt checks a block fenced "go excerpt PATH", PATH relative to
// the Markdown file: every line of code it shows is a line of PATH, in the
// same order (indentation, trailing comments, comment lines and "..."
// elisions aside). PATH is compiled and tested with its module, so an
// excerpt shows code that builds.
func checkExcerpt(root string, b block) error {
	f := strings.Fields(b.info)
	if len(f) != 3 {
		return fmt.Errorf("%s: a go excerpt names one file: go excerpt PATH", b.where())
	}
	path := filepath.Join(root, filepath.Dir(b.file), f[2])
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: go excerpt of %s: %w", b.where(), f[2], err)
	}
	var src []string
	for _, l := range strings.Split(string(data), "\n") {
		src = append(src, excerptLine(l))
	}
	at := 0
	for i, l := range strings.Split(b.body, "\n") {
		want := excerptLine(l)
		if want == "" {
			continue
		}
		j := slices.Index(src[at:], want)
		if j < 0 {
			return fmt.Errorf("%s: go excerpt line %d is not in %s (after line %d): %q", b.where(), i+1, f[2], at, strings.TrimSpace(l))
		}
		at += j + 1
	}
	return nil
}

// TestMarkdown checks the code blocks and links of README.md and docs/*.md.
func TestMarkdown(t *testing.T) {
	root := repoRoot(t)
	files := markdownFiles(t, root)
	require.Contains(t, files, "docs/architecture.md")
	require.Contains(t, files, "docs/guarantees.md")
	errs, goBlocks := checkMarkdown(root, files)
	errs = append(errs, checkGo(t, root, goBlocks)...)
	for _, err := range errs {
		t.Error(err)
	}
}

// TestReadmeSaga pins that the README's saga example is checked as a saga
// definition, not only as YAML.
func TestReadmeSaga(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	blocks, _ := parseMarkdown("README.md", string(data))
	var sagas []string
	for _, b := range blocks {
		if b.lang() == "yaml" && strings.Contains(b.body, "\nsteps:") {
			def, err := parseSaga(b)
			require.NoError(t, err)
			sagas = append(sagas, def.Name)
		}
	}
	require.Contains(t, sagas, "order-to-cash")
}

var docRefRE = regexp.MustCompile(`\bdocs/([A-Za-z0-9_.-]+\.md)(#[A-Za-z0-9_-]+)?`)

// TestDocReferences checks that every docs/<name>.md mentioned in the
// repository's sources names a file, and an anchor of it when it has a
// #fragment.
func TestDocReferences(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	anchorsOf := anchorReader(root)
	exts := []string{".go", ".md", ".sql", ".sh", ".yaml", ".yml"}
	refs := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !slices.Contains(exts, filepath.Ext(path)) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if filepath.ToSlash(rel) == "docs/docs_test.go" {
			return nil // its tests name made-up documents
		}
		for i, line := range bytes.Split(data, []byte("\n")) {
			for _, m := range docRefRE.FindAllSubmatch(line, -1) {
				refs++
				file := "docs/" + string(m[1])
				if _, err := os.Stat(filepath.Join(root, file)); err != nil {
					t.Errorf("%s:%d: %s does not exist", rel, i+1, file)
					continue
				}
				if len(m[2]) > 0 {
					a, err := anchorsOf(file)
					require.NoError(t, err)
					if frag := string(m[2][1:]); !a[frag] {
						t.Errorf("%s:%d: %s has no heading or anchor %q", rel, i+1, file, frag)
					}
				}
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.NotZero(t, refs, "no docs/ reference found: the walk is broken")
}

// TestCheckerFails proves each check can fail: broken documents produce
// the expected errors.
func TestCheckerFails(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "docs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "docs", "other.md"), []byte("# Other\n\n## G5. Gap safety\n"), 0o644))
	const doc = "# Doc\n\n" +
		"```yaml\npayload: {order_id: $.order_id, payment_id: $.payment.payment_id?}\n```\n\n" +
		"```yaml\nname: x\nversion: 1\nsteps: []\n```\n\n" +
		"```json\n{\"a\": 1,}\n```\n\n" +
		"```yaml\nfine: [1, 2]\n```\n\n" +
		"[gone](missing.md) and [ok](other.md#g5-gap-safety) and [bad anchor](other.md#g6-sagas-end)\n" +
		"`[in code](nowhere.md)` and [self](#doc) and [web](https://example.com/x)\n"
	require.NoError(t, os.WriteFile(filepath.Join(root, "docs", "broken.md"), []byte(doc), 0o644))

	errs, _ := checkMarkdown(root, []string{"docs/broken.md"})
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	all := strings.Join(msgs, "\n")
	require.Len(t, errs, 5, all)
	require.Contains(t, all, "docs/broken.md:3: YAML does not parse")
	require.Contains(t, all, "docs/broken.md:7: saga definition does not load")
	require.Contains(t, all, "docs/broken.md:13: invalid JSON")
	require.Contains(t, all, `link "missing.md": no such file`)
	require.Contains(t, all, `has no heading or anchor "g6-sagas-end"`)
}

// TestGoBlocksFail proves a Go block that does not compile fails the
// check, and that whole files and fragments that do compile pass.
func TestGoBlocksFail(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Go code")
	}
	root := repoRoot(t)
	good := []block{
		{file: "x.md", line: 1, info: "go", body: "package main\n\nimport \"github.com/vextrus/dtx/pkg/saga\"\n\nfunc main() { _, _ = saga.Parse(\"x\", nil) }\n"},
		{file: "x.md", line: 9, info: "go fragment", body: "ctx := context.Background()\n_, err := saga.LoadDir(\"sagas\")\nfmt.Println(ctx, err)\n"},
	}
	require.Empty(t, checkGo(t, root, good))

	bad := []block{{file: "y.md", line: 5, info: "go fragment", body: "var n int = \"not a number\"\n_ = n\n"}}
	errs := checkGo(t, root, bad)
	require.Len(t, errs, 1)
	require.Contains(t, errs[0].Error(), "y.md:5")
}

// TestExcerpts proves an excerpt must show lines of its file, in order.
func TestExcerpts(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "docs"), 0o755))
	src := "package x\n\nfunc f() {\n\ta := 1 // one\n\tb := a + 1\n\t_ = b\n}\n"
	require.NoError(t, os.WriteFile(filepath.Join(root, "x.go"), []byte(src), 0o644))
	ok := block{file: "docs/a.md", line: 3, info: "go excerpt ../x.go", body: "a := 1      // the first\n... // more\n_ = b\n"}
	require.NoError(t, checkExcerpt(root, ok))
	for name, b := range map[string]block{
		"changed":   {file: "docs/a.md", line: 3, info: "go excerpt ../x.go", body: "a := 2\n"},
		"reordered": {file: "docs/a.md", line: 3, info: "go excerpt ../x.go", body: "_ = b\na := 1\n"},
		"no file":   {file: "docs/a.md", line: 3, info: "go excerpt ../y.go", body: "a := 1\n"},
		"no path":   {file: "docs/a.md", line: 3, info: "go excerpt", body: "a := 1\n"},
	} {
		require.Error(t, checkExcerpt(root, b), name)
	}
}

// TestAnchors pins the heading anchors the references depend on.
func TestAnchors(t *testing.T) {
	t.Parallel()
	a := anchors("# dtx\n## G5. Gap safety\n## `dtxctl` and the API\n## Sagas\n## Sagas\n```\n# not a heading\n```\n<a id=\"custom\"></a>\n")
	for _, want := range []string{"dtx", "g5-gap-safety", "dtxctl-and-the-api", "sagas", "sagas-1", "custom"} {
		require.True(t, a[want], "anchor %q missing from %v", want, a)
	}
	require.False(t, a["not-a-heading"])
}
