package fault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/internal/otlpsink"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
)

// TestOneOrderIsOneTraceAcrossTheProcesses places one Order-to-Cash order
// with one HTTP request to the real binaries, each exporting its spans to an
// OTLP/HTTP endpoint in the test: the sales API (example-o2c sales-api), the
// outbox relay, the orchestrator and the participants (example-o2c
// participants). The order's saga completes, and its whole path is one
// trace: every span the processes export for it has the request's trace id,
// its parent is a span of that trace (or the caller's, for the request's own
// span), and the spans come from at least four processes.
func TestOneOrderIsOneTraceAcrossTheProcesses(t *testing.T) {
	t.Parallel()
	r := newSagaRig(t)
	sink := otlpsink.New(nil)
	collector := httptest.NewServer(sink)
	t.Cleanup(collector.Close)
	r.extraEnv = []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}

	startRelay(t, relayOpts{name: "relay", dbURL: pgtest.URL(), schema: r.db.Name, brokers: r.brokers,
		env: r.extraEnv})
	orch := r.orchestrator(t, "orchestrator")
	orch.logs.WaitFor(t, "topics: all exist", 60*time.Second)
	r.participants(t, "participants")
	api := r.salesAPI(t)

	// One request, as a caller that traces: its own span is the root.
	var ids [24]byte
	_, _ = rand.Read(ids[:])
	traceID, callerSpan := hex.EncodeToString(ids[:16]), hex.EncodeToString(ids[16:])
	orderID := "ord-trace-" + traceID[:8]
	body := fmt.Sprintf(`{"order_id": %q, "customer_id": "cus-0001", "currency": "EUR",
		"lines": [{"sku": "BOOK-0001", "quantity": 1, "unit_price": 1999}],
		"shipping_address": {"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London",
			"postal_code": "SW1Y 4JH", "country": "GB"}}`, orderID)
	req, err := http.NewRequest(http.MethodPost, api+"/orders", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer shop-frontend")
	req.Header.Set("Idempotency-Key", "trace-"+orderID)
	req.Header.Set("traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	answer, _ := io.ReadAll(res.Body)
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusCreated, res.StatusCode, string(answer))

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		res, err := http.Get(api + "/orders/" + orderID)
		if !assert.NoError(c, err) {
			return
		}
		defer res.Body.Close()
		var v struct {
			Status string `json:"status"`
			Saga   *struct {
				Status string `json:"status"`
			} `json:"saga"`
		}
		assert.NoError(c, json.NewDecoder(res.Body).Decode(&v))
		assert.Equal(c, "confirmed", v.Status)
		if assert.NotNil(c, v.Saga) {
			assert.Equal(c, "completed", v.Saga.Status)
		}
	}, 90*time.Second, 100*time.Millisecond, "the order's saga completes and the order is confirmed")

	// Every hop's span arrives: the request, the relay's publish of each
	// record, the orchestrator's trigger and four replies, the four
	// commands at the participants.
	hops := []struct{ service, name string }{
		{"example-o2c-sales-api", "POST /orders"},
		{"dtx-outbox-relay", "publish " + r.prefix + "sales.events"},
		{"dtx-orchestrator", "process " + r.prefix + "sales.events"},
		{"dtx-outbox-relay", "publish " + r.prefix + "inventory.commands"},
		{"dtx-example-o2c", "process " + r.prefix + "inventory.commands"},
		{"dtx-example-o2c", "process " + r.prefix + "accounting.commands"},
		{"dtx-example-o2c", "process " + r.prefix + "delivery.commands"},
		{"dtx-example-o2c", "process " + r.prefix + "sales.commands"},
		{"dtx-orchestrator", "process " + r.prefix + "dtx.saga.replies"},
	}
	var spans []otlpsink.Span
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		spans = sink.Trace(traceID)
		for _, h := range hops {
			assert.True(c, slices.ContainsFunc(spans, func(s otlpsink.Span) bool {
				return s.Service == h.service && s.Name == h.name
			}), "a span %q of %s in the trace", h.name, h.service)
		}
		replies := 0
		for _, s := range spans {
			if s.Name == "process "+r.prefix+"dtx.saga.replies" {
				replies++
			}
		}
		assert.GreaterOrEqual(c, replies, 4, "the orchestrator handles the four replies in the trace")
	}, 30*time.Second, 100*time.Millisecond, "the spans of every hop reach the collector")

	var tree strings.Builder
	otlpsink.WriteTree(&tree, spans)
	t.Logf("trace %s:\n%s", traceID, tree.String())
	services := otlpsink.Services(spans)
	require.GreaterOrEqual(t, len(services), 4, "spans from at least four processes: %v", services)

	// Correctly parented: each span's parent is in the trace, but for the
	// request's span, whose parent is the caller's.
	inTrace := map[string]bool{}
	for _, s := range spans {
		inTrace[s.SpanID] = true
	}
	roots := 0
	for _, s := range spans {
		if s.ParentSpanID == callerSpan {
			roots++
			require.Equal(t, "example-o2c-sales-api", s.Service, "the request's span is the sales API's: %+v", s)
			continue
		}
		require.True(t, inTrace[s.ParentSpanID], "span %q of %s has parent %q, which is not in the trace", s.Name, s.Service, s.ParentSpanID)
	}
	require.Equal(t, 1, roots, "one span is the caller's child")
	// No span of another trace belongs to this order.
	for _, s := range sink.Spans() {
		if s.TraceID != traceID && s.Attributes["messaging.kafka.message.key"] == orderID {
			t.Errorf("span %q of %s for order %s is in trace %s, not in the request's", s.Name, s.Service, orderID, s.TraceID)
		}
	}
}

// salesAPI runs example-o2c sales-api on a free port and returns its base
// URL once it answers.
func (r *sagaRig) salesAPI(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	cmd := exec.Command(filepath.Join(binDir, "example-o2c"), "sales-api", "--addr", addr,
		"--topic", r.prefix+"sales.events")
	cmd.Env = r.env("sales-api")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("log of sales-api:\n%s", out.String())
		}
	})
	url := "http://" + addr
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/orders/none", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		_ = res.Body.Close()
		return res.StatusCode == http.StatusNotFound
	}, 60*time.Second, 100*time.Millisecond, "the sales API answers")
	return url
}
