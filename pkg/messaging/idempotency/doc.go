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
// MiddlewareConfig.ScopeFunc returns.
//
//  1. Claim: a row (scope, key, fingerprint, state running) is inserted and
//     committed on its own, so concurrent requests with the key see it.
//  2. If the key has a row already: another fingerprint → 422; completed →
//     the stored status, headers and body, with Idempotent-Replayed: true;
//     running → 409 with Retry-After. An expired row counts as absent.
//  3. Run: the middleware begins the request's transaction, locks the row in
//     it and calls the handler with it: TxFromRequest(r), or
//     inbox.TxFromContext(r.Context()). The response is buffered.
//  4. Complete: in the same transaction the row becomes completed with the
//     response; the transaction commits, and only then is the response sent.
//
// # Guarantees
//
//   - Effects written with the request's transaction commit together with
//     the stored response, or neither does: a crash anywhere leaves either
//     both (a retry replays) or neither (a retry runs the handler).
//   - One request per key runs at a time; a retry during it gets 409, and a
//     request with another fingerprint gets 422 at any time.
//   - A request that answers 5xx is not stored: its transaction rolls back
//     and the key is released before the response is sent, so the client
//     may retry at once. Any other status (2xx, 3xx, 4xx) is stored and
//     replayed: a 4xx is the answer to that request and would be again.
//   - A claim whose process died (its transaction is gone) is taken over
//     by a retry once Config.RunningTimeout (1 minute by default) has passed
//     since the claim; nothing of the dead run was committed. A request that
//     runs longer than that keeps its key: its transaction holds the row
//     locked, so it is never taken over while alive. A request delayed
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
// computes it) and trailers. Set-Cookie is stored: give every principal its
// own scope with ScopeFunc, or one client's retry may receive another
// client's response, cookies included. Headers set by middleware in front of
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
package idempotency
