// Package idempotency is net/http middleware that makes requests carrying an
// Idempotency-Key header safe to retry: a retry gets the response of the
// first request instead of a second effect. Keys and responses live in the
// table <schema>.idempotency_keys (Store); a Store's Middleware serves one
// mount of an API (MiddlewareConfig).
//
// # What a request goes through
//
// Requests whose method is not in MiddlewareConfig.Methods (POST and PATCH
// by default) pass through, and so do requests without a key unless
// MiddlewareConfig.RequireKey is set (then: 400). A key is 1 to 255 bytes of
// printable ASCII (else 400). The body is read in full, up to
// MaxRequestBytes (else 413), and the request's fingerprint is the SHA-256 of
// its method, path, query, MiddlewareConfig.FingerprintHeaders and body.
// Keys are kept per scope: MiddlewareConfig.Scope plus the principal that
// MiddlewareConfig.ScopeFunc returns, by default the caller's Authorization
// header (AuthorizationPrincipal); a request with a key but no principal is
// refused with 400, so one caller is never served another's response.
// The default fails closed: a mount configured without thought for callers
// refuses anonymous keyed requests rather than share one key space among
// them, where a caller that guessed or reused a key would read a stored
// response meant for someone else.
//
//  1. Claim: a row (scope, key, fingerprint, state running) is inserted and
//     committed on its own, so concurrent requests with the key see it.
//  2. If the key has a row already: another fingerprint → 422; completed →
//     the stored status, headers and body, with Idempotent-Replayed: true;
//     running → 409 with Retry-After. An expired row counts as absent.
//  3. Run: the middleware begins the request's transaction, takes the key's
//     transaction-scoped advisory lock in it (no row lock: the transaction
//     gets no transaction id, so the handler may still take outbox.Lock or
//     append to the event store as its first locks, which per-key commit
//     order needs), checks that the claim is still its own, and calls the
//     handler in a savepoint of that transaction: TxFromRequest(r), or
//     messaging.TxFromContext(r.Context()). The response is buffered.
//  4. Complete: a 2xx answer keeps the handler's writes (the savepoint is
//     released); any other stored answer undoes them (the savepoint is
//     rolled back). Then, in the same transaction, the row becomes
//     completed with the response; the transaction commits, and only then
//     is the response sent.
//
// # Guarantees
//
//   - Effects written with the request's transaction commit together with
//     the stored response, or neither does: a crash anywhere leaves either
//     both (a retry replays) or neither (a retry runs the handler).
//   - One request per key runs at a time; a retry during it gets 409, and a
//     request with another fingerprint gets 422 at any time.
//   - A request that answers 5xx, 408, 425 or 429 is not stored: its
//     transaction rolls back and the key is released before the response is
//     sent, so the client may retry at once (those answers ask for the same
//     request again). Any other status (2xx, 3xx, other 4xx) is stored and
//     replayed: such a 4xx is the answer to that request and would be again.
//     Only a 2xx keeps what the handler wrote: after a 1xx, 3xx or 4xx
//     nothing of the handler stays (an invoice never commits without the
//     event whose refusal made the handler answer 422).
//   - A claim whose process died (its transaction is gone) is taken over
//     by a retry once Config.RunningTimeout (1 minute by default) has passed
//     since the claim; nothing of the dead run was committed. A request that
//     runs longer than that keeps its key: its transaction holds the key's
//     advisory lock, so it is never taken over while alive. A request delayed
//     between claim and lock past the timeout and then overtaken is fenced:
//     it answers 409 without running its handler.
//   - Keys expire Config.TTL (24 hours by default) after their claim,
//     measured on the database's clock; an expired key runs again, even
//     with another request. Sweep and the sweeper of Start delete expired
//     rows in batches.
//
// # Stored headers
//
// All response headers the handler sets are stored and replayed, except
// hop-by-hop headers (Connection and those it names, Keep-Alive,
// Transfer-Encoding, Upgrade, Te, Trailer, Proxy-*), Content-Length (net/http
// computes it), trailers, and headers meant for the one caller that got the
// response: Set-Cookie, Set-Cookie2, Authentication-Info and
// Clear-Site-Data go with the first response only, and are never stored nor
// replayed. Headers set by middleware in front of
// this one are not stored; they are set again on every request, replays
// included. Without a Content-Type, the one net/http would sniff is stored.
//
// # How it fails
//
//   - Effects the handler makes outside the request's transaction (calls to
//     other services, writes on other connections) are not covered: if the
//     process dies after such an effect and before the commit, the retry
//     repeats it. Such effects need their own idempotency.
//   - The request's transaction holds a pool connection for the whole
//     handler; a handler that takes a second connection from the same pool
//     may exhaust it under load. Use the request's transaction.
//   - The response is buffered until the commit: Flush, Hijack and trailers
//     are not supported, and a response longer than MaxResponseBytes rolls
//     the request back and answers 500.
//   - When the store fails (database down, failed commit) the answer is 503
//     with Retry-After; whether or not the commit happened, a retry with the
//     same key answers correctly (replay or run).
//   - A client retrying while a dead request's lease runs gets 409 until
//     RunningTimeout has passed.
//   - A handler must not commit or roll back the transaction it is given
//     (it is a savepoint of the request's): the request then fails with 503
//     and nothing of it is kept.
//   - A request with a key whose ScopeFunc names no principal (by default:
//     no Authorization header) is refused with 400 and runs nothing. Set
//     ScopeFunc to the authenticated user's id when callers authenticate
//     otherwise (cookies, mutual TLS), or to SharedKeys for a mount with
//     one trusted caller.
package idempotency
