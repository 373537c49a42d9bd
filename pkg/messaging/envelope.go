package messaging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"mime"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

// Record headers dtx writes beside HeaderID and its kin. Both are CloudEvents
// extension attributes, so any CloudEvents reader sees them as such.
const (
	// HeaderSchemaVersion (extension "schemaversion") is the version of the
	// JSON Schema the payload follows, among the schemas of its type: a
	// decimal integer from 1, without sign or leading zeros. It is absent when
	// the envelope names no version. The schema itself is found by type and
	// version; see SchemaRegistry.
	HeaderSchemaVersion = "ce_schemaversion"
	// HeaderPartitionKey (extension "partitionkey", the CloudEvents
	// Partitioning extension) repeats the partition key that travels as the
	// record key, so that CloudEvents readers that do not map the record key
	// to an attribute still see it. Decode reads it only when
	// MetadataPartitionKey is absent.
	HeaderPartitionKey = "ce_partitionkey"
)

// SpecVersion is the CloudEvents version dtx writes, and the only one Decode
// accepts.
const SpecVersion = "1.0"

// ContentTypeJSON is the media type of dtx payloads. ToMessage writes it when
// an envelope names no content type, and Decode assumes it when a message
// carries none.
const ContentTypeJSON = "application/json"

// Envelope is a dtx message as programs build and read it: the CloudEvents
// 1.0 attributes, dtx's extensions and the payload. ToMessage turns it into a
// Watermill message whose metadata are the record headers of the CloudEvents
// Kafka binding in binary mode; Decode reads one back.
//
// Every string attribute must be valid UTF-8 without control characters
// (U+0000 to U+001F, U+007F to U+009F), as CloudEvents requires. An empty
// optional attribute is absent: it is not written, and a header with an empty
// value reads as absent.
//
// An Envelope is a value: copies share Extensions and Data, which callers
// must not change once the envelope is handed over.
type Envelope struct {
	// ID identifies the message among those of its Source; together they
	// are unique (CloudEvents "id", header ce_id). It is the Watermill
	// message UUID and the key consumers deduplicate on. Required;
	// NewEnvelope sets a UUID version 7.
	ID string
	// Type says what happened or what is asked, e.g. "sales.order.placed"
	// (CloudEvents "type", header ce_type). With SchemaVersion it selects
	// the payload's JSON Schema. Required.
	Type string
	// Source names the producer as a URI reference, e.g. "/sales/api"
	// (CloudEvents "source", header ce_source). Required.
	Source string
	// Subject is the entity the message is about, such as an order id
	// (CloudEvents "subject", header ce_subject). Optional; must not be
	// blank if set.
	Subject string
	// Time is when the occurrence happened (CloudEvents "time", header
	// ce_time, RFC 3339 in UTC with up to nanoseconds). Optional: the zero
	// Time is absent. Its year in UTC must lie between 0 and 9999. Decode
	// returns it in UTC.
	Time time.Time
	// DataContentType is the media type of Data (CloudEvents
	// "datacontenttype", header content-type). Empty means ContentTypeJSON.
	// When it is JSON (application/json, text/json or any +json type), Data
	// must be valid JSON.
	DataContentType string
	// DataSchema is an absolute URI naming the schema of Data (CloudEvents
	// "dataschema", header ce_dataschema), such as the $id that
	// SchemaRegistry.SchemaID returns. Optional and informative only:
	// validation selects the schema by Type and SchemaVersion.
	DataSchema string
	// SchemaVersion is the version of Type's schema that Data follows
	// (extension "schemaversion", header ce_schemaversion). Zero means none;
	// it must not be negative. NewEnvelope sets 1.
	SchemaVersion int
	// PartitionKey is the Kafka record key (metadata dtx_partition_key, and
	// extension "partitionkey"): messages with the same key keep their
	// order. Optional: without it the publisher picks a partition.
	PartitionKey string
	// CorrelationID ties together all messages of one business transaction,
	// such as a saga (extension "correlationid", header ce_correlationid).
	CorrelationID string
	// CausationID is the ID of the message that caused this one (extension
	// "causationid", header ce_causationid).
	CausationID string
	// SagaID is the saga a command or reply belongs to (extension "sagaid",
	// header ce_sagaid).
	SagaID string
	// TraceParent is the W3C traceparent of the producer's span (extension
	// "traceparent", header ce_traceparent). dtx's trace propagation sets it
	// and TraceState; Decode does not parse them.
	TraceParent string
	// TraceState is the W3C tracestate (extension "tracestate", header
	// ce_tracestate).
	TraceState string
	// Extensions holds further CloudEvents extension attributes, each
	// written as the header "ce_<name>". A name consists of lower-case
	// ASCII letters and digits and must not be one of the attributes above
	// (see ReservedAttribute). An entry with an empty value is not written.
	Extensions map[string]string
	// Data is the payload, written as the record value as it is. Empty means
	// no data.
	Data json.RawMessage
}

// ReservedAttribute reports whether name is a CloudEvents attribute that an
// Envelope field carries (such as "id", "time" or "correlationid"), or "data",
// so it cannot be used as a key of Envelope.Extensions.
func ReservedAttribute(name string) bool {
	switch name {
	case "specversion", "id", "type", "source", "subject", "time",
		"datacontenttype", "dataschema", "data",
		"schemaversion", "partitionkey", "correlationid", "causationid",
		"sagaid", "traceparent", "tracestate":
		return true
	}
	return false
}

// NewEnvelope returns a valid envelope of the given type and source with a
// fresh ID (UUID version 7, so ids sort by creation time), Time set to now in
// UTC truncated to microseconds (the precision PostgreSQL keeps, so an
// envelope stored and read back compares equal), DataContentType
// ContentTypeJSON and SchemaVersion 1. data becomes Data: a json.RawMessage
// is used as it is (after checking it is valid JSON), nil means no data, and
// anything else is encoded with encoding/json.
//
// The error wraps ErrInvalidEnvelope when typ or source is not valid, or is
// the encoding error.
func NewEnvelope(typ, source string, data any) (Envelope, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Envelope{}, fmt.Errorf("messaging: new envelope id: %w", err)
	}
	var raw json.RawMessage
	switch d := data.(type) {
	case nil:
	case json.RawMessage:
		if len(d) > 0 {
			raw = bytes.Clone(d)
		}
	default:
		if raw, err = json.Marshal(d); err != nil {
			return Envelope{}, fmt.Errorf("messaging: encode data of %q: %w", typ, err)
		}
	}
	e := Envelope{
		ID:              id.String(),
		Type:            typ,
		Source:          source,
		Time:            time.Now().UTC().Truncate(time.Microsecond),
		DataContentType: ContentTypeJSON,
		SchemaVersion:   1,
		Data:            raw,
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

// CausedBy returns a copy of e recorded as caused by cause: its CausationID
// is cause.ID and its CorrelationID is cause's, or cause.ID when cause has
// none (cause then started the business transaction). It takes cause's
// SagaID when e has none. Trace context is left alone: trace propagation sets
// it from the span that handles cause. Extensions and Data of the copy are
// its own.
func (e Envelope) CausedBy(cause Envelope) Envelope {
	e.CausationID = cause.ID
	e.CorrelationID = cause.CorrelationID
	if e.CorrelationID == "" {
		e.CorrelationID = cause.ID
	}
	if e.SagaID == "" {
		e.SagaID = cause.SagaID
	}
	e.Extensions = maps.Clone(e.Extensions)
	e.Data = bytes.Clone(e.Data)
	return e
}

// Validate reports whether e can be sent: the required attributes are set
// and every attribute and extension follows the rules of its field. The error
// is an *EnvelopeError, which wraps ErrInvalidEnvelope.
func (e Envelope) Validate() error {
	if p := e.check(); p != nil {
		return &EnvelopeError{Field: p.field, Reason: p.reason}
	}
	return nil
}

// ToMessage returns e as a Watermill message: its UUID is ID, its payload a
// copy of Data, and its metadata the CloudEvents record headers
// (ce_specversion "1.0", ce_id, ce_type, ce_source, content-type and the
// optional attributes and extensions that are set, ce_time in UTC with
// time.RFC3339Nano) plus MetadataPartitionKey, which the publisher turns
// into the record key. An empty DataContentType is written as
// ContentTypeJSON.
//
// It fails, with an *EnvelopeError wrapping ErrInvalidEnvelope, when e is
// not valid (see Validate).
func (e Envelope) ToMessage() (*message.Message, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	var payload message.Payload
	if len(e.Data) > 0 {
		payload = bytes.Clone(e.Data)
	}
	msg := message.NewMessage(e.ID, payload)
	md := msg.Metadata
	md[HeaderSpecVersion] = SpecVersion
	md[HeaderID] = e.ID
	md[HeaderType] = e.Type
	md[HeaderSource] = e.Source
	md[HeaderContentType] = e.DataContentType
	if e.DataContentType == "" {
		md[HeaderContentType] = ContentTypeJSON
	}
	if !e.Time.IsZero() {
		md[HeaderTime] = e.Time.UTC().Format(time.RFC3339Nano)
	}
	if e.SchemaVersion > 0 {
		md[HeaderSchemaVersion] = strconv.Itoa(e.SchemaVersion)
	}
	if e.PartitionKey != "" {
		md[MetadataPartitionKey] = e.PartitionKey
		md[HeaderPartitionKey] = e.PartitionKey
	}
	for _, a := range []struct{ header, value string }{
		{HeaderSubject, e.Subject},
		{HeaderDataSchema, e.DataSchema},
		{HeaderCorrelationID, e.CorrelationID},
		{HeaderCausationID, e.CausationID},
		{HeaderSagaID, e.SagaID},
		{HeaderTraceParent, e.TraceParent},
		{HeaderTraceState, e.TraceState},
	} {
		if a.value != "" {
			md[a.header] = a.value
		}
	}
	for name, value := range e.Extensions {
		if value != "" {
			md[cePrefix+name] = value
		}
	}
	return msg, nil
}

// Decode reads the envelope of a received message from its metadata and
// payload. Metadata that are not CloudEvents headers, such as
// MetadataKafkaTopic, are ignored, and so is the message UUID: the ID is
// ce_id. The partition key is read from MetadataPartitionKey, or from
// HeaderPartitionKey when that is absent. A message without content-type is
// read as ContentTypeJSON. Every "ce_" header other than those of Envelope's
// fields becomes an entry of Extensions; Extensions is nil when there are
// none. Data is a copy of the payload, nil when it is empty.
//
// It rejects, with a *DecodeError wrapping ErrInvalidEnvelope, a message
// without ce_id, ce_type or ce_source, with a ce_specversion other than
// "1.0", with a malformed time, source, dataschema, schema version or content
// type, with an invalid extension name, with a header ce_datacontenttype or
// ce_data (binary mode carries them as content-type and the payload), with
// an attribute that is not a valid CloudEvents string, or with a payload that
// is not JSON when the content type is JSON. Such a message stays invalid
// however often it is retried.
//
// Whatever Decode accepts, ToMessage accepts, and decoding its message again
// yields an equal Envelope.
func Decode(msg *message.Message) (Envelope, error) {
	if msg == nil {
		return Envelope{}, &DecodeError{Reason: "no message"}
	}
	md := msg.Metadata
	switch sv, ok := md[HeaderSpecVersion]; {
	case !ok || sv == "":
		return Envelope{}, &DecodeError{Field: HeaderSpecVersion, Reason: "missing"}
	case sv != SpecVersion:
		return Envelope{}, &DecodeError{Field: HeaderSpecVersion, Reason: "unsupported CloudEvents version " + quote(sv)}
	}
	e := Envelope{
		ID:              md[HeaderID],
		Type:            md[HeaderType],
		Source:          md[HeaderSource],
		Subject:         md[HeaderSubject],
		DataContentType: md[HeaderContentType],
		DataSchema:      md[HeaderDataSchema],
		PartitionKey:    md[MetadataPartitionKey],
		CorrelationID:   md[HeaderCorrelationID],
		CausationID:     md[HeaderCausationID],
		SagaID:          md[HeaderSagaID],
		TraceParent:     md[HeaderTraceParent],
		TraceState:      md[HeaderTraceState],
	}
	if e.DataContentType == "" {
		e.DataContentType = ContentTypeJSON
	}
	if e.PartitionKey == "" {
		e.PartitionKey = md[HeaderPartitionKey]
	}
	if s := md[HeaderTime]; s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return Envelope{}, &DecodeError{Field: HeaderTime, Reason: "not an RFC 3339 time: " + quote(s)}
		}
		e.Time = t.UTC()
	}
	if s := md[HeaderSchemaVersion]; s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || strconv.Itoa(v) != s {
			return Envelope{}, &DecodeError{Field: HeaderSchemaVersion, Reason: "not a positive decimal integer: " + quote(s)}
		}
		e.SchemaVersion = v
	}
	// Binary mode carries these two as the content-type header and the
	// payload; a header of their own would contradict them.
	for _, key := range []string{cePrefix + "datacontenttype", cePrefix + "data"} {
		if _, ok := md[key]; ok {
			return Envelope{}, &DecodeError{Field: key, Reason: "not allowed in binary mode"}
		}
	}
	for key, value := range md {
		name, ok := strings.CutPrefix(key, cePrefix)
		if !ok || value == "" || ReservedAttribute(name) {
			continue
		}
		if e.Extensions == nil {
			e.Extensions = make(map[string]string)
		}
		e.Extensions[name] = value
	}
	if len(msg.Payload) > 0 {
		e.Data = bytes.Clone(msg.Payload)
	}
	if p := e.check(); p != nil {
		if p.header == MetadataPartitionKey && md[MetadataPartitionKey] == "" {
			p.header = HeaderPartitionKey // the key came from there
		}
		return Envelope{}, &DecodeError{Field: p.header, Reason: p.reason}
	}
	return e, nil
}

// cePrefix starts the header of every CloudEvents attribute but
// datacontenttype in the Kafka binding's binary mode.
const cePrefix = "ce_"

// problem is what check finds wrong, named both as Decode reports it (the
// header) and as Validate does (the Envelope field).
type problem struct {
	header, field, reason string
}

// check applies the rules of Envelope's fields, in a fixed order so the
// same envelope always yields the same error.
func (e Envelope) check() *problem {
	required := []struct{ header, field, value string }{
		{HeaderID, "ID", e.ID},
		{HeaderType, "Type", e.Type},
		{HeaderSource, "Source", e.Source},
	}
	for _, a := range required {
		if a.value == "" {
			return &problem{a.header, a.field, "missing"}
		}
		if reason := checkString(a.value, true); reason != "" {
			return &problem{a.header, a.field, reason}
		}
	}
	if _, err := url.Parse(e.Source); err != nil {
		return &problem{HeaderSource, "Source", "not a URI reference: " + quote(e.Source)}
	}
	optional := []struct {
		header, field, value string
		nonBlank             bool
	}{
		{HeaderSubject, "Subject", e.Subject, true},
		{HeaderContentType, "DataContentType", e.DataContentType, true},
		{HeaderDataSchema, "DataSchema", e.DataSchema, true},
		{MetadataPartitionKey, "PartitionKey", e.PartitionKey, false},
		{HeaderCorrelationID, "CorrelationID", e.CorrelationID, false},
		{HeaderCausationID, "CausationID", e.CausationID, false},
		{HeaderSagaID, "SagaID", e.SagaID, false},
		{HeaderTraceParent, "TraceParent", e.TraceParent, false},
		{HeaderTraceState, "TraceState", e.TraceState, false},
	}
	for _, a := range optional {
		if a.value == "" {
			continue
		}
		if reason := checkString(a.value, a.nonBlank); reason != "" {
			return &problem{a.header, a.field, reason}
		}
	}
	if !e.Time.IsZero() {
		if y := e.Time.UTC().Year(); y < 0 || y > 9999 {
			return &problem{HeaderTime, "Time", fmt.Sprintf("year %d in UTC is outside 0..9999", y)}
		}
	}
	if e.DataContentType != "" && !validMediaType(e.DataContentType) {
		return &problem{HeaderContentType, "DataContentType", "not a media type (type/subtype): " + quote(e.DataContentType)}
	}
	if e.DataSchema != "" {
		if u, err := url.Parse(e.DataSchema); err != nil || !u.IsAbs() {
			return &problem{HeaderDataSchema, "DataSchema", "not an absolute URI: " + quote(e.DataSchema)}
		}
	}
	if e.SchemaVersion < 0 {
		return &problem{HeaderSchemaVersion, "SchemaVersion", fmt.Sprintf("negative (%d)", e.SchemaVersion)}
	}
	names := slices.Sorted(maps.Keys(e.Extensions))
	for _, name := range names {
		field := fmt.Sprintf("Extensions[%q]", name)
		switch {
		case !validExtensionName(name):
			return &problem{cePrefix + name, field, "an extension name must consist of lower-case ASCII letters and digits"}
		case ReservedAttribute(name):
			return &problem{cePrefix + name, field, "reserved: the attribute has an Envelope field of its own"}
		}
		if value := e.Extensions[name]; value != "" {
			if reason := checkString(value, false); reason != "" {
				return &problem{cePrefix + name, field, reason}
			}
		}
	}
	if len(e.Data) > 0 && IsJSONContentType(e.DataContentType) && !json.Valid(e.Data) {
		return &problem{"payload", "Data", "not valid JSON although the content type is " + quote(contentTypeOrJSON(e.DataContentType))}
	}
	return nil
}

// IsJSONContentType reports whether the media type ct says its content is
// JSON: application/json, text/json or any type with the +json suffix,
// whatever its parameters. The empty string counts as JSON, the dtx default.
func IsJSONContentType(ct string) bool {
	if ct == "" {
		return true
	}
	if !validMediaType(ct) {
		return false
	}
	mt, _, _ := mime.ParseMediaType(ct) // validMediaType parsed it
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// validMediaType reports whether ct is a media type as RFC 2046 has it:
// type/subtype, then any parameters. mime.ParseMediaType alone also takes
// a bare token.
func validMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	typ, sub, ok := strings.Cut(mt, "/")
	return ok && typ != "" && sub != "" && !strings.Contains(sub, "/")
}

func contentTypeOrJSON(ct string) string {
	if ct == "" {
		return ContentTypeJSON
	}
	return ct
}

// checkString applies the CloudEvents rules for a String attribute and, if
// nonBlank, requires something besides white space. It returns what is
// wrong, or "".
func checkString(s string, nonBlank bool) string {
	if !utf8.ValidString(s) {
		return "not valid UTF-8"
	}
	for _, r := range s {
		if r <= 0x1f || (r >= 0x7f && r <= 0x9f) {
			return fmt.Sprintf("contains the control character %U", r)
		}
	}
	if nonBlank && strings.TrimSpace(s) == "" {
		return "blank"
	}
	return ""
}

// validExtensionName reports whether name follows the CloudEvents 1.0 rule
// for attribute names: one or more lower-case ASCII letters or digits.
func validExtensionName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// quote quotes s for an error message, cut to a length a log line can carry.
func quote(s string) string {
	const limit = 64
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}
