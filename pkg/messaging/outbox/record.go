package outbox

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/vextrus/dtx/pkg/messaging"
)

// ErrTooLarge is wrapped by the *MessageError of a message whose record
// would exceed Config.MaxRecordBytes. It is permanent: the message must be
// made smaller (or split), not retried.
var ErrTooLarge = errors.New("outbox: record too large")

// ErrInvalidMessage is wrapped by the *MessageError of a message that is a
// valid envelope but cannot become a record: nil, a UUID that differs from
// its ce_id, or a metadata entry (record header) or key that is not valid
// UTF-8 or contains NUL, which the jsonb and text columns cannot hold. It is
// permanent.
var ErrInvalidMessage = errors.New("outbox: invalid message")

// ErrInvalidTopic is wrapped by the error of a call naming a topic that
// Kafka would refuse: empty, longer than 249 bytes, "." or "..", or with a
// character other than ASCII letters, digits, '.', '_' and '-'.
var ErrInvalidTopic = errors.New("outbox: invalid topic name")

// ErrKeyOrder is wrapped by the error of a Write or Lock that found, at
// READ COMMITTED with Config.KeyOrder KeyOrderVerify, that a transaction with
// a higher id committed a row of one of its keys before this transaction
// took the key's lock: this transaction's rows would be published first
// although it commits later. Nothing was written. Roll the transaction back
// and retry it, calling Lock before its first write.
var ErrKeyOrder = errors.New("outbox: per-key order would be inverted: lock the keys before the transaction's first write")

// ErrNoTransaction is wrapped by the error of a call without a transaction:
// a nil pgx.Tx, or a message published through ContextPublisher whose
// context carries none.
var ErrNoTransaction = errors.New("outbox: no transaction")

// MessageError says which message of a call was refused, and why. Nothing
// of the call was written.
type MessageError struct {
	// Index is the message's position among the call's messages, from 0.
	Index int
	// ID is the message's UUID (or the envelope's ID), possibly empty.
	ID string
	// Err is the cause: it wraps ErrTooLarge, ErrInvalidMessage,
	// messaging.ErrInvalidEnvelope, messaging.ErrSchemaViolation or
	// messaging.ErrUnknownType.
	Err error
}

// Error implements error.
func (e *MessageError) Error() string {
	return "message #" + strconv.Itoa(e.Index) + " (id " + strconv.Quote(e.ID) + "): " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *MessageError) Unwrap() error { return e.Err }

// topicRE is the outbox table's CHECK on topic names, which is Kafka's rule.
var topicRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func validateTopic(topic string) error {
	if !topicRE.MatchString(topic) || topic == "." || topic == ".." {
		return ErrInvalidTopic
	}
	return nil
}

// row is one outbox row before insertion; an empty key is NULL.
type row struct {
	key     string
	headers []byte
	payload []byte
}

// rows validates msgs and turns each into a row, or fails with the
// *MessageError of the first that cannot be written.
func (o *Outbox) rows(msgs []*message.Message) ([]row, error) {
	rows := make([]row, len(msgs))
	for i, msg := range msgs {
		r, err := o.toRow(msg)
		if err != nil {
			id := ""
			if msg != nil {
				id = msg.UUID
			}
			return nil, &MessageError{Index: i, ID: id, Err: err}
		}
		rows[i] = r
	}
	return rows, nil
}

// toRow applies the kafka package's rule for turning a message into a
// record (metadata messaging.MetadataPartitionKey is the key, the UUID
// header ce_id, every other entry a header except the receive-only ones),
// after the checks of Write.
func (o *Outbox) toRow(msg *message.Message) (row, error) {
	if msg == nil {
		return row{}, fmt.Errorf("%w: nil message", ErrInvalidMessage)
	}
	env, err := messaging.Decode(msg)
	if err != nil {
		return row{}, err
	}
	if msg.UUID != env.ID {
		return row{}, fmt.Errorf("%w: UUID %q differs from metadata %s %q: the record header %s is the UUID",
			ErrInvalidMessage, msg.UUID, messaging.HeaderID, env.ID, messaging.HeaderID)
	}
	return o.envelopeRow(env, msg)
}

// envelopeRow is the rest of toRow for a message whose envelope env is
// known to be valid and to carry msg.UUID as its ID: either decoded from msg,
// or the envelope msg was made from by Envelope.ToMessage, which validates
// it and whose message Decode reads back as an equal envelope.
func (o *Outbox) envelopeRow(env messaging.Envelope, msg *message.Message) (row, error) {
	if o.cfg.Registry != nil {
		if err := o.cfg.Registry.ValidateEnvelope(env); err != nil {
			return row{}, err
		}
	}

	key := msg.Metadata[messaging.MetadataPartitionKey]
	if reason := checkText(key); reason != "" {
		return row{}, fmt.Errorf("%w: metadata %s %s", ErrInvalidMessage, messaging.MetadataPartitionKey, reason)
	}
	names := make([]string, 1, len(msg.Metadata)+1)
	names[0] = messaging.HeaderID
	for k, v := range msg.Metadata {
		if k == messaging.HeaderID || k == messaging.MetadataPartitionKey || strings.HasPrefix(k, messaging.ReceiveOnlyPrefix) {
			continue
		}
		if reason := checkText(k); reason != "" {
			return row{}, fmt.Errorf("%w: a metadata key %s", ErrInvalidMessage, reason)
		}
		if reason := checkText(v); reason != "" {
			return row{}, fmt.Errorf("%w: metadata %q %s", ErrInvalidMessage, k, reason)
		}
		names = append(names, k)
	}
	slices.Sort(names[1:])
	value := func(k string) string {
		if k == messaging.HeaderID {
			return msg.UUID
		}
		return msg.Metadata[k]
	}
	hj, textLen := encodeHeaders(names, value)
	payload := []byte(msg.Payload)
	if payload == nil {
		payload = []byte{} // the column is NOT NULL; an empty value is not no value
	}
	if size := len(key) + textLen + len(payload); size > o.cfg.MaxRecordBytes {
		return row{}, fmt.Errorf("%w: %d bytes (key %d, headers %d, payload %d), more than %d",
			ErrTooLarge, size, len(key), textLen, len(payload), o.cfg.MaxRecordBytes)
	}
	return row{key: key, headers: hj, payload: payload}, nil
}

// encodeHeaders returns the JSON object of the headers names (distinct,
// valid UTF-8 without NUL) with their value(name), and its length as the
// outbox table's size CHECK measures it (see jsonbTextLen). It does what
// json.Marshal of a map does, minus the reflection and the sorting that
// jsonb undoes anyway.
func encodeHeaders(names []string, value func(string) string) ([]byte, int) {
	textLen := 2 // {}
	size := 2
	for i, k := range names {
		v := value(k)
		if i > 0 {
			textLen += 2 // ", "
		}
		textLen += jsonStringLen(k) + 2 + jsonStringLen(v) // ": "
		size += 2*len(k) + 2*len(v) + 8
	}
	b := make([]byte, 0, size)
	b = append(b, '{')
	for i, k := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, value(k))
	}
	b = append(b, '}')
	return b, textLen
}

// appendJSONString appends s, valid UTF-8, to b as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// checkText returns why s cannot be stored in a text or jsonb string, or "".
func checkText(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL byte"
	}
	return ""
}

// jsonbTextLen is octet_length(headers::text) of the jsonb object of h, as
// the outbox table's size CHECK measures it: PostgreSQL prints an object as
// {"k": "v", "k2": "v2"} and escapes only '"', '\\' and control characters
// below U+0020, as \b, \f, \n, \r, \t or \u00XX.
func jsonbTextLen(h map[string]string) int {
	n := 2 // {}
	first := true
	for k, v := range h {
		if !first {
			n += 2 // ", "
		}
		first = false
		n += jsonStringLen(k) + 2 + jsonStringLen(v) // ": "
	}
	return n
}

func jsonStringLen(s string) int {
	n := 2 // quotes
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"', c == '\\', c == '\b', c == '\f', c == '\n', c == '\r', c == '\t':
			n += 2
		case c < 0x20:
			n += 6
		default:
			n++
		}
	}
	return n
}
