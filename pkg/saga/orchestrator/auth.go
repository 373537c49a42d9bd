package orchestrator

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Authenticator decides who makes a request to the operator API
// (HTTPHandler). Implementations must be safe for concurrent use.
type Authenticator interface {
	// Authenticate returns the caller of r, or an error (answered 401
	// with WWW-Authenticate: Bearer) when r carries no credential the
	// authenticator accepts. It must not read r's body.
	Authenticate(r *http.Request) (Principal, error)
}

// Principal is an authenticated caller of the operator API.
type Principal struct {
	// Name is who the credential belongs to; the timeline records it as
	// who operated. Empty when the credential names no one: the timeline
	// then records what the request body's "by" says.
	Name string
	// ReadOnly restricts the caller to list and show: its operations are
	// answered 403.
	ReadOnly bool
}

// ErrUnauthenticated is what the authenticators of this package return for
// a request without a credential they accept.
var ErrUnauthenticated = errors.New("orchestrator: missing or invalid operator credential")

// MinTokenLength is the fewest bytes an operator token may have.
const MinTokenLength = 16

// maxTokenNameLength bounds a token's name, which the timeline records.
const maxTokenNameLength = 64

// Token is one operator credential: a bearer token and, optionally, the
// name of who holds it.
type Token struct {
	// Name is who holds the token, recorded in the timeline as who
	// operated. Empty: the timeline records what the request says ("by").
	// At most 64 bytes, without spaces or colons.
	Name string
	// Secret is the bearer token. At least MinTokenLength bytes, printable
	// ASCII without spaces.
	Secret string
}

// NewTokenAuthenticator returns an Authenticator that accepts requests with
// the header "Authorization: Bearer <secret>" of one of tokens, compared in
// constant time, and names the caller by the token's Name. It needs at
// least one token; names and secrets must be unique.
func NewTokenAuthenticator(tokens []Token) (Authenticator, error) {
	if len(tokens) == 0 {
		return nil, errors.New("orchestrator: NewTokenAuthenticator: no tokens")
	}
	a := &tokenAuth{}
	secrets := map[string]bool{}
	names := map[string]bool{}
	for i, t := range tokens {
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("orchestrator: token %d: %w", i+1, err)
		}
		if secrets[t.Secret] {
			return nil, fmt.Errorf("orchestrator: token %d: the same secret as an earlier token", i+1)
		}
		if t.Name != "" && names[t.Name] {
			return nil, fmt.Errorf("orchestrator: token %d: the name %q is taken by an earlier token", i+1, t.Name)
		}
		secrets[t.Secret], names[t.Name] = true, true
		a.tokens = append(a.tokens, hashedToken{name: t.Name, sum: sha256.Sum256([]byte(t.Secret))})
	}
	return a, nil
}

func (t Token) validate() error {
	if len(t.Secret) < MinTokenLength {
		return fmt.Errorf("the secret has %d bytes, fewer than %d", len(t.Secret), MinTokenLength)
	}
	for _, c := range []byte(t.Secret) {
		if c <= ' ' || c > '~' {
			return errors.New("the secret holds a space or a character that is not printable ASCII")
		}
	}
	if len(t.Name) > maxTokenNameLength {
		return fmt.Errorf("the name has %d bytes, more than %d", len(t.Name), maxTokenNameLength)
	}
	if strings.ContainsAny(t.Name, ": \t") {
		return fmt.Errorf("the name %q holds a space or a colon", t.Name)
	}
	return nil
}

type hashedToken struct {
	name string
	sum  [sha256.Size]byte
}

type tokenAuth struct {
	tokens []hashedToken
}

// Authenticate compares the bearer token with every token, in time that
// depends on neither the token nor which one matches: both sides are
// hashed to the same length first.
func (a *tokenAuth) Authenticate(r *http.Request) (Principal, error) {
	secret, ok := bearer(r)
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	sum := sha256.Sum256([]byte(secret))
	match := -1
	for i, t := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{Name: a.tokens[match].name}, nil
}

// bearer returns the token of r's "Authorization: Bearer" header.
func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// ReadTokenFile reads operator tokens from path: one token a line, either
// "<secret>" or "<name>:<secret>" (the name is recorded in the timeline
// as who operated); blank lines and lines starting with # are skipped;
// spaces around a line are ignored. It fails, naming the line, on a token
// NewTokenAuthenticator would refuse, and on a file without tokens.
func ReadTokenFile(path string) ([]Token, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var tokens []Token
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var t Token
		if name, secret, ok := strings.Cut(line, ":"); ok {
			t = Token{Name: strings.TrimSpace(name), Secret: strings.TrimSpace(secret)}
			if t.Name == "" {
				return nil, fmt.Errorf("%s line %d: the name before the colon is empty", path, n)
			}
		} else {
			t = Token{Secret: line}
		}
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		tokens = append(tokens, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%s holds no token", path)
	}
	return tokens, nil
}

// LoopbackReadOnly returns an Authenticator for an operator API without
// credentials: it lets requests from a loopback address that name a
// loopback host (localhost, 127.0.0.1, [::1]) list and show sagas, and
// refuses their operations (403). A request naming another host is
// refused (401): a web page that rebinds its own name to 127.0.0.1 cannot
// read sagas through a browser.
func LoopbackReadOnly() Authenticator { return loopbackReadOnly{} }

type loopbackReadOnly struct{}

func (loopbackReadOnly) Authenticate(r *http.Request) (Principal, error) {
	remote, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		remote = r.RemoteAddr
	}
	if !IsLoopback(remote) || !IsLoopback(hostOnly(r.Host)) {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{ReadOnly: true}, nil
}

// IsLoopback reports whether host (a name or an IP address, without a
// port) is "localhost" or a loopback address. An empty host, which
// listens on every interface, is not.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip != nil && ip.IsLoopback()
}

// hostOnly strips the port of a Host header.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// TokenFileReloadInterval is how often, at most, a TokenFileAuthenticator
// looks whether its file changed.
const TokenFileReloadInterval = time.Second

// NewTokenFileAuthenticator returns an Authenticator with the tokens of the
// file at path (see ReadTokenFile and NewTokenAuthenticator) that follows
// the file: when its modification time or size changed (a Kubernetes
// Secret updated in place, an edit), it reads it again, at most once every
// TokenFileReloadInterval, so adding or revoking a token needs no restart.
// A file that cannot be read or holds no valid token then is logged as an
// error on logger (nil: not logged) and the tokens read before stay in
// force, so a bad edit locks no operator out; it fails at once when the
// file is bad at the start.
func NewTokenFileAuthenticator(path string, logger *slog.Logger) (Authenticator, error) {
	a := &tokenFileAuth{path: path, logger: logger}
	if err := a.load(); err != nil {
		return nil, err
	}
	return a, nil
}

type tokenFileAuth struct {
	path   string
	logger *slog.Logger

	mu      sync.Mutex
	auth    Authenticator
	modTime time.Time // of the file as last seen, read well or not
	size    int64
	checked time.Time
	failure string // the last failure logged, "" once the file reads well
}

// load reads the file and swaps the tokens in; the caller holds mu or is
// the constructor.
func (a *tokenFileAuth) load() error {
	fi, err := os.Stat(a.path)
	if err != nil {
		return err
	}
	a.modTime, a.size = fi.ModTime(), fi.Size()
	tokens, err := ReadTokenFile(a.path)
	if err != nil {
		return err
	}
	auth, err := NewTokenAuthenticator(tokens)
	if err != nil {
		return fmt.Errorf("%s: %w", a.path, err)
	}
	a.auth = auth
	return nil
}

func (a *tokenFileAuth) Authenticate(r *http.Request) (Principal, error) {
	a.mu.Lock()
	if now := time.Now(); now.Sub(a.checked) >= TokenFileReloadInterval {
		a.checked = now
		a.reload()
	}
	auth := a.auth
	a.mu.Unlock()
	return auth.Authenticate(r)
}

// reload reads the file again if it changed since it was last seen, and
// logs a failure once (until another one, or a success).
func (a *tokenFileAuth) reload() {
	fi, err := os.Stat(a.path)
	if err == nil {
		if fi.ModTime().Equal(a.modTime) && fi.Size() == a.size {
			return
		}
		err = a.load()
	}
	switch {
	case err != nil && err.Error() != a.failure:
		a.failure = err.Error()
		if a.logger != nil {
			a.logger.Error("orchestrator: the operator token file cannot be read again; the tokens read before stay in force",
				"file", a.path, "err", err)
		}
	case err == nil:
		a.failure = ""
		if a.logger != nil {
			a.logger.Info("orchestrator: operator tokens read again", "file", a.path)
		}
	}
}
