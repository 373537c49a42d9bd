package telemetry_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/otlpsink"
	"github.com/vextrus/dtx/internal/relay"
	"github.com/vextrus/dtx/internal/testkit/kafkatest"
	"github.com/vextrus/dtx/internal/testkit/pgtest"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
	"github.com/vextrus/dtx/pkg/telemetry"
)

// With tracing on, a request's trace goes through the outbox and the relay
// to Kafka: the record a handler's outbox row becomes carries the trace
// context of the request's server span (ce_traceparent: the caller's trace
// id, the server span as parent) and the request's correlation id, and the
// server span reaches the collector.
func TestTraceTravelsFromARequestThroughTheOutboxToKafka(t *testing.T) {
	keepGlobals(t)
	clearEnv(t)
	rcv := otlpsink.New(nil)
	collector := httptest.NewServer(rcv)
	t.Cleanup(collector.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	shutdown, err := telemetry.Setup(t.Context(), telemetry.Config{ServiceName: "sales-api"})
	require.NoError(t, err)

	schema := pgtest.NewSchema(t)
	topic := kafkatest.NewTopic(t, 1)
	ob, err := outbox.New(outbox.Config{Schema: schema.Name})
	require.NoError(t, err)

	// The service: POST /orders writes an event through the outbox in the
	// request's transaction.
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		env, err := messaging.NewEnvelope("sales.order.placed", "/sales", map[string]string{"order_id": "o-1"})
		if err == nil {
			env.PartitionKey = "o-1"
			err = pgx.BeginFunc(r.Context(), schema.Pool, func(tx pgx.Tx) error {
				return ob.WriteEnvelopes(r.Context(), tx, topic, env)
			})
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req := httptest.NewRequest(http.MethodPost, "/orders", nil)
	req.Header.Set("traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	req.Header.Set(middleware.HeaderHTTPCorrelationID, "checkout-7")
	w := httptest.NewRecorder()
	middleware.HTTP(mux).ServeHTTP(w, req)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())

	// The relay publishes the row.
	r, err := relay.New(schema.Pool, []kgo.Opt{kgo.SeedBrokers(kafkatest.Brokers()...)}, relay.Config{
		Schema: schema.Name, Holder: "trace-test", PollInterval: 100 * time.Millisecond,
		LeaseDuration: 2 * time.Second, MaxBackoff: time.Second, ProduceTimeout: 5 * time.Second,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("the relay did not stop")
		}
	})

	consumer := kafkatest.NewClient(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var rec *kgo.Record
	pollCtx, pollCancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer pollCancel()
	for rec == nil {
		fs := consumer.PollFetches(pollCtx)
		require.NoError(t, pollCtx.Err(), "no record was published")
		fs.EachRecord(func(r *kgo.Record) { rec = r })
	}
	headers := map[string]string{}
	for _, h := range rec.Headers {
		headers[h.Key] = string(h.Value)
	}
	tp := strings.Split(headers[messaging.HeaderTraceParent], "-")
	require.Len(t, tp, 4, "the record carries a traceparent: %v", headers)
	require.Equal(t, callerTrace, tp[1], "the caller's trace goes on")
	require.NotEqual(t, callerSpan, tp[2], "its parent is the request's server span, not the caller's")
	require.Equal(t, "01", tp[3], "sampled")
	require.Equal(t, "checkout-7", headers[messaging.HeaderCorrelationID])

	flushCtx, flushCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer flushCancel()
	require.NoError(t, shutdown(flushCtx))
	spans := rcv.Spans()
	i := slices.IndexFunc(spans, func(s otlpsink.Span) bool { return s.Name == "POST /orders" })
	require.GreaterOrEqual(t, i, 0, "the server span is exported: %v", names(spans))
	require.Equal(t, "sales-api", spans[i].Service)
	require.Equal(t, tp[2], spans[i].SpanID, "the record's parent is the exported server span")
}
