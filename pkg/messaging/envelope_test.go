package messaging_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
)

// fullEnvelope returns an envelope with every attribute set.
func fullEnvelope() messaging.Envelope {
	return messaging.Envelope{
		ID:              "0190a2b4-6c1e-7d3a-9f00-1234567890ab",
		Type:            "sales.order.placed",
		Source:          "/sales/api",
		Subject:         "ord-1001",
		Time:            time.Date(2026, 11, 23, 9, 15, 2, 123456789, time.UTC),
		DataContentType: "application/json; charset=utf-8",
		DataSchema:      "https://github.com/vextrus/dtx/schemas/sales.order.placed.v1.json",
		SchemaVersion:   1,
		PartitionKey:    "ord-1001",
		CorrelationID:   "corr-1",
		CausationID:     "cause-1",
		SagaID:          "saga-1",
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:      "vendor=value",
		Extensions:      map[string]string{"tenant": "acme", "region2": "eu"},
		Data:            json.RawMessage(`{"order_id":"ord-1001","total_amount":4348}`),
	}
}

func TestNewEnvelope(t *testing.T) {
	t.Parallel()
	before := time.Now()
	e, err := messaging.NewEnvelope("sales.order.placed", "/sales/api", map[string]any{"order_id": "ord-1"})
	require.NoError(t, err)

	id, err := uuid.Parse(e.ID)
	require.NoError(t, err)
	require.Equal(t, uuid.Version(7), id.Version())
	require.Equal(t, "sales.order.placed", e.Type)
	require.Equal(t, "/sales/api", e.Source)
	require.Equal(t, time.UTC, e.Time.Location())
	require.Zero(t, e.Time.Nanosecond()%1000, "time not truncated to microseconds")
	require.WithinRange(t, e.Time, before.Add(-time.Microsecond), time.Now())
	require.Equal(t, messaging.ContentTypeJSON, e.DataContentType)
	require.Equal(t, 1, e.SchemaVersion)
	require.JSONEq(t, `{"order_id":"ord-1"}`, string(e.Data))
	require.NoError(t, e.Validate())

	other, err := messaging.NewEnvelope("sales.order.placed", "/sales/api", nil)
	require.NoError(t, err)
	require.NotEqual(t, e.ID, other.ID)
	require.Nil(t, other.Data)

	raw := json.RawMessage(`{"a": [1, 2]}`)
	e, err = messaging.NewEnvelope("t", "/s", raw)
	require.NoError(t, err)
	require.Equal(t, raw, e.Data, "raw JSON is used as it is")
	raw[1] = 'X'
	require.NotEqual(t, raw, e.Data, "raw JSON is copied")
}

func TestNewEnvelopeFails(t *testing.T) {
	t.Parallel()
	_, err := messaging.NewEnvelope("", "/s", nil)
	var envErr *messaging.EnvelopeError
	require.ErrorAs(t, err, &envErr)
	require.Equal(t, "Type", envErr.Field)
	require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)

	_, err = messaging.NewEnvelope("t", "http://[::1", nil)
	require.ErrorAs(t, err, &envErr)
	require.Equal(t, "Source", envErr.Field)

	_, err = messaging.NewEnvelope("t", "/s", json.RawMessage(`{"a":`))
	require.ErrorAs(t, err, &envErr)
	require.Equal(t, "Data", envErr.Field)

	_, err = messaging.NewEnvelope("t", "/s", make(chan int))
	require.Error(t, err)
	require.NotErrorIs(t, err, messaging.ErrInvalidEnvelope)
	var jsonErr *json.UnsupportedTypeError
	require.ErrorAs(t, err, &jsonErr)
}

func TestToMessage(t *testing.T) {
	t.Parallel()
	e := fullEnvelope()
	msg, err := e.ToMessage()
	require.NoError(t, err)
	require.Equal(t, e.ID, msg.UUID)
	require.Equal(t, []byte(e.Data), []byte(msg.Payload))
	require.Equal(t, message.Metadata{
		"ce_specversion":    "1.0",
		"ce_id":             e.ID,
		"ce_type":           "sales.order.placed",
		"ce_source":         "/sales/api",
		"ce_subject":        "ord-1001",
		"ce_time":           "2026-11-23T09:15:02.123456789Z",
		"content-type":      "application/json; charset=utf-8",
		"ce_dataschema":     e.DataSchema,
		"ce_schemaversion":  "1",
		"dtx_partition_key": "ord-1001",
		"ce_partitionkey":   "ord-1001",
		"ce_correlationid":  "corr-1",
		"ce_causationid":    "cause-1",
		"ce_sagaid":         "saga-1",
		"ce_traceparent":    e.TraceParent,
		"ce_tracestate":     "vendor=value",
		"ce_tenant":         "acme",
		"ce_region2":        "eu",
	}, msg.Metadata)

	msg.Payload[0] = 'X'
	require.Equal(t, byte('{'), e.Data[0], "the payload is a copy")
}

func TestToMessageMinimal(t *testing.T) {
	t.Parallel()
	e := messaging.Envelope{
		ID: "1", Type: "t", Source: "/s",
		Time:       time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600)),
		Extensions: map[string]string{"empty": ""},
	}
	msg, err := e.ToMessage()
	require.NoError(t, err)
	require.Empty(t, msg.Payload)
	require.Equal(t, message.Metadata{
		"ce_specversion": "1.0",
		"ce_id":          "1",
		"ce_type":        "t",
		"ce_source":      "/s",
		"ce_time":        "2026-01-02T02:04:05Z",
		"content-type":   "application/json",
	}, msg.Metadata)
}

func TestEnvelopeValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*messaging.Envelope)
		field  string
	}{
		{"missing id", func(e *messaging.Envelope) { e.ID = "" }, "ID"},
		{"blank id", func(e *messaging.Envelope) { e.ID = " \u00a0" }, "ID"},
		{"missing type", func(e *messaging.Envelope) { e.Type = "" }, "Type"},
		{"missing source", func(e *messaging.Envelope) { e.Source = "" }, "Source"},
		{"source not a URI reference", func(e *messaging.Envelope) { e.Source = "%zz" }, "Source"},
		{"blank subject", func(e *messaging.Envelope) { e.Subject = "  " }, "Subject"},
		{"year past 9999", func(e *messaging.Envelope) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "Time"},
		{"negative year", func(e *messaging.Envelope) { e.Time = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) }, "Time"},
		{"content type", func(e *messaging.Envelope) { e.DataContentType = "json please" }, "DataContentType"},
		{"content type without subtype", func(e *messaging.Envelope) { e.DataContentType = "json" }, "DataContentType"},
		{"relative data schema", func(e *messaging.Envelope) { e.DataSchema = "schemas/x.json" }, "DataSchema"},
		{"negative schema version", func(e *messaging.Envelope) { e.SchemaVersion = -1 }, "SchemaVersion"},
		{"control character", func(e *messaging.Envelope) { e.CorrelationID = "a\nb" }, "CorrelationID"},
		{"C1 control character", func(e *messaging.Envelope) { e.PartitionKey = "a\u0085b" }, "PartitionKey"},
		{"invalid UTF-8", func(e *messaging.Envelope) { e.TraceParent = "\xff" }, "TraceParent"},
		{"upper-case extension", func(e *messaging.Envelope) { e.Extensions = map[string]string{"Tenant": "x"} }, `Extensions["Tenant"]`},
		{"extension with underscore", func(e *messaging.Envelope) { e.Extensions = map[string]string{"a_b": "x"} }, `Extensions["a_b"]`},
		{"empty extension name", func(e *messaging.Envelope) { e.Extensions = map[string]string{"": "x"} }, `Extensions[""]`},
		{"reserved extension", func(e *messaging.Envelope) { e.Extensions = map[string]string{"correlationid": "x"} }, `Extensions["correlationid"]`},
		{"extension value", func(e *messaging.Envelope) { e.Extensions = map[string]string{"x": "\t"} }, `Extensions["x"]`},
		{"data not JSON", func(e *messaging.Envelope) { e.Data = json.RawMessage("{") }, "Data"},
		{"data not JSON, default content type", func(e *messaging.Envelope) {
			e.DataContentType = ""
			e.Data = json.RawMessage("plain")
		}, "Data"},
		{"data not JSON, +json content type", func(e *messaging.Envelope) {
			e.DataContentType = "application/cloudevents+json"
			e.Data = json.RawMessage("plain")
		}, "Data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := fullEnvelope()
			tt.change(&e)
			err := e.Validate()
			var envErr *messaging.EnvelopeError
			require.ErrorAs(t, err, &envErr)
			require.Equal(t, tt.field, envErr.Field, err.Error())
			require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)

			_, err = e.ToMessage()
			require.ErrorAs(t, err, &envErr)
			require.Equal(t, tt.field, envErr.Field)
		})
	}

	e := fullEnvelope()
	e.DataContentType = "text/plain"
	e.Data = json.RawMessage("not JSON, not checked")
	require.NoError(t, e.Validate())
}

func TestDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	for name, e := range map[string]messaging.Envelope{
		"full":    fullEnvelope(),
		"minimal": {ID: "1", Type: "t", Source: "/s", DataContentType: messaging.ContentTypeJSON},
		"plain text": {ID: "2", Type: "t", Source: "urn:x", DataContentType: "text/plain",
			Data: json.RawMessage("hello")},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			msg, err := e.ToMessage()
			require.NoError(t, err)
			// What a subscriber adds must not disturb the envelope.
			msg.Metadata[messaging.MetadataKafkaTopic] = "orders"
			msg.Metadata[messaging.MetadataKafkaOffset] = "42"
			got, err := messaging.Decode(msg)
			require.NoError(t, err)
			require.Equal(t, e, got)
		})
	}
}

func TestDecodeReadsForeignMessages(t *testing.T) {
	t.Parallel()
	msg := message.NewMessage("watermill-uuid", []byte(`[1]`))
	msg.Metadata = message.Metadata{
		"ce_specversion":  "1.0",
		"ce_id":           "a-1",
		"ce_type":         "t",
		"ce_source":       "https://example.com/producer",
		"ce_time":         "2026-11-23T10:15:02.5+01:00",
		"ce_partitionkey": "k-1",
		"ce_subject":      "",
		"ce_other":        "",
		"ce_tenant":       "acme",
		"traceparent":     "not ours",
		"CE_ID":           "ignored",
	}
	e, err := messaging.Decode(msg)
	require.NoError(t, err)
	require.Equal(t, messaging.Envelope{
		ID:              "a-1",
		Type:            "t",
		Source:          "https://example.com/producer",
		Time:            time.Date(2026, 11, 23, 9, 15, 2, 500_000_000, time.UTC),
		DataContentType: messaging.ContentTypeJSON,
		PartitionKey:    "k-1",
		Extensions:      map[string]string{"tenant": "acme"},
		Data:            json.RawMessage(`[1]`),
	}, e)

	msg.Metadata[messaging.MetadataPartitionKey] = "record-key"
	e, err = messaging.Decode(msg)
	require.NoError(t, err)
	require.Equal(t, "record-key", e.PartitionKey, "the record key wins over ce_partitionkey")

	msg.Payload = nil
	e, err = messaging.Decode(msg)
	require.NoError(t, err)
	require.Nil(t, e.Data)
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		change  func(md message.Metadata, msg *message.Message)
		field   string
		message string
	}{
		{"no spec version", func(md message.Metadata, _ *message.Message) { delete(md, "ce_specversion") }, "ce_specversion",
			"messaging: cannot decode message: ce_specversion: missing"},
		{"spec version 0.3", func(md message.Metadata, _ *message.Message) { md["ce_specversion"] = "0.3" }, "ce_specversion",
			`messaging: cannot decode message: ce_specversion: unsupported CloudEvents version "0.3"`},
		{"no id", func(md message.Metadata, _ *message.Message) { delete(md, "ce_id") }, "ce_id", ""},
		{"empty id", func(md message.Metadata, _ *message.Message) { md["ce_id"] = "" }, "ce_id", ""},
		{"no type", func(md message.Metadata, _ *message.Message) { delete(md, "ce_type") }, "ce_type", ""},
		{"no source", func(md message.Metadata, _ *message.Message) { delete(md, "ce_source") }, "ce_source", ""},
		{"malformed time", func(md message.Metadata, _ *message.Message) { md["ce_time"] = "2026-11-23 09:15:02" }, "ce_time",
			`messaging: cannot decode message: ce_time: not an RFC 3339 time: "2026-11-23 09:15:02"`},
		{"time out of range", func(md message.Metadata, _ *message.Message) { md["ce_time"] = "0000-01-01T00:00:00+01:00" }, "ce_time", ""},
		{"schema version zero", func(md message.Metadata, _ *message.Message) { md["ce_schemaversion"] = "0" }, "ce_schemaversion", ""},
		{"schema version leading zero", func(md message.Metadata, _ *message.Message) { md["ce_schemaversion"] = "01" }, "ce_schemaversion", ""},
		{"schema version sign", func(md message.Metadata, _ *message.Message) { md["ce_schemaversion"] = "+1" }, "ce_schemaversion", ""},
		{"schema version text", func(md message.Metadata, _ *message.Message) { md["ce_schemaversion"] = "v1" }, "ce_schemaversion", ""},
		{"content type", func(md message.Metadata, _ *message.Message) { md["content-type"] = "/" }, "content-type", ""},
		{"content type without subtype", func(md message.Metadata, _ *message.Message) { md["content-type"] = "text" }, "content-type",
			`messaging: cannot decode message: content-type: not a media type (type/subtype): "text"`},
		{"unprintable extension name", func(md message.Metadata, _ *message.Message) { md["ce_a\xffb c"] = "x" }, "ce_a\xffb c",
			`messaging: cannot decode message: "ce_a\xffb c": an extension name must consist of lower-case ASCII letters and digits`},
		{"data schema", func(md message.Metadata, _ *message.Message) { md["ce_dataschema"] = "relative" }, "ce_dataschema", ""},
		{"extension name", func(md message.Metadata, _ *message.Message) { md["ce_Tenant"] = "x" }, "ce_Tenant", ""},
		{"ce_ alone", func(md message.Metadata, _ *message.Message) { md["ce_"] = "x" }, "ce_", ""},
		{"datacontenttype header", func(md message.Metadata, _ *message.Message) { md["ce_datacontenttype"] = "application/json" },
			"ce_datacontenttype", ""},
		{"data header", func(md message.Metadata, _ *message.Message) { md["ce_data"] = "{}" }, "ce_data", ""},
		{"control character", func(md message.Metadata, _ *message.Message) { md["ce_sagaid"] = "s\x00" }, "ce_sagaid", ""},
		{"partition key", func(md message.Metadata, _ *message.Message) { md["dtx_partition_key"] = "\xfe" }, "dtx_partition_key", ""},
		{"partition key header", func(md message.Metadata, _ *message.Message) {
			delete(md, "dtx_partition_key")
			md["ce_partitionkey"] = "\x7f"
		}, "ce_partitionkey", ""},
		{"payload not JSON", func(_ message.Metadata, msg *message.Message) { msg.Payload = []byte("{'a':1}") }, "payload",
			`messaging: cannot decode message: payload: not valid JSON although the content type is "application/json; charset=utf-8"`},
		{"payload not JSON, no content type", func(md message.Metadata, msg *message.Message) {
			delete(md, "content-type")
			msg.Payload = []byte("plain")
		}, "payload", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg, err := fullEnvelope().ToMessage()
			require.NoError(t, err)
			tt.change(msg.Metadata, msg)
			_, err = messaging.Decode(msg)
			var decErr *messaging.DecodeError
			require.ErrorAs(t, err, &decErr)
			require.Equal(t, tt.field, decErr.Field, err.Error())
			require.NotEmpty(t, decErr.Reason)
			require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
			if tt.message != "" {
				require.EqualError(t, err, tt.message)
			}
		})
	}

	_, err := messaging.Decode(nil)
	require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
	_, err = messaging.Decode(&message.Message{})
	require.ErrorIs(t, err, messaging.ErrInvalidEnvelope, "nil metadata")
}

func TestDecodeErrorQuotesLongValuesShort(t *testing.T) {
	t.Parallel()
	msg, err := fullEnvelope().ToMessage()
	require.NoError(t, err)
	long := ""
	for range 100 {
		long += "é"
	}
	msg.Metadata["ce_time"] = long
	_, err = messaging.Decode(msg)
	require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
	require.Less(t, len(err.Error()), 150)
	require.Contains(t, err.Error(), `é"...`)
}

func TestCausedBy(t *testing.T) {
	t.Parallel()
	start := messaging.Envelope{ID: "start", Type: "sales.order.place", Source: "/api", SagaID: "saga-1"}
	placed := messaging.Envelope{ID: "placed", Type: "sales.order.placed", Source: "/sales",
		Extensions: map[string]string{"tenant": "acme"}}

	got := placed.CausedBy(start)
	require.Equal(t, "start", got.CausationID)
	require.Equal(t, "start", got.CorrelationID, "the first message names the transaction")
	require.Equal(t, "saga-1", got.SagaID)
	require.Empty(t, placed.CausationID, "the receiver is not changed")

	got.Extensions["tenant"] = "other"
	require.Equal(t, "acme", placed.Extensions["tenant"], "extensions are copied")

	reserve := messaging.Envelope{ID: "reserve", Type: "inventory.stock.reserve", Source: "/orchestrator", SagaID: "saga-2"}
	got = reserve.CausedBy(placed.CausedBy(start))
	require.Equal(t, "placed", got.CausationID)
	require.Equal(t, "start", got.CorrelationID, "the correlation id is inherited")
	require.Equal(t, "saga-2", got.SagaID, "an own saga id is kept")
}

func TestIsJSONContentType(t *testing.T) {
	t.Parallel()
	for ct, want := range map[string]bool{
		"":                                true,
		"application/json":                true,
		"application/json; charset=utf-8": true,
		"Application/JSON":                true,
		"text/json":                       true,
		"application/cloudevents+json":    true,
		"application/vnd.dtx.order+json":  true,
		"text/plain":                      false,
		"application/xml":                 false,
		"application/jsonx":               false,
		"application/json/x":              false,
		"json":                            false,
	} {
		require.Equal(t, want, messaging.IsJSONContentType(ct), ct)
	}
}

func TestReservedAttribute(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"specversion", "id", "type", "source", "subject", "time", "datacontenttype",
		"dataschema", "data", "schemaversion", "partitionkey", "correlationid", "causationid", "sagaid",
		"traceparent", "tracestate"} {
		require.True(t, messaging.ReservedAttribute(name), name)
	}
	require.False(t, messaging.ReservedAttribute("tenant"))
}

func TestErrorsClassify(t *testing.T) {
	t.Parallel()
	errs := []error{
		&messaging.DecodeError{Field: "ce_id", Reason: "missing"},
		&messaging.EnvelopeError{Field: "ID", Reason: "missing"},
	}
	for _, err := range errs {
		require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
		require.NotErrorIs(t, err, messaging.ErrSchemaViolation)
	}
	serr := &messaging.SchemaError{Type: "t", Version: 2, Details: []string{"a", "b"}}
	require.ErrorIs(t, serr, messaging.ErrSchemaViolation)
	require.EqualError(t, serr, "messaging: payload of t v2 violates its schema: a; b")
	require.ErrorIs(t, errors.Join(errors.New("x"), serr), messaging.ErrSchemaViolation)
}
