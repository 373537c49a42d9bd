package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
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
	if o.cfg.Registry != nil {
		if err := o.cfg.Registry.ValidateEnvelope(env); err != nil {
			return row{}, err
		}
	}

	key := msg.Metadata[messaging.MetadataPartitionKey]
	if reason := checkText(key); reason != "" {
		return row{}, fmt.Errorf("%w: metadata %s %s", ErrInvalidMessage, messaging.MetadataPartitionKey, reason)
	}
	headers := make(map[string]string, len(msg.Metadata))
	headers[messaging.HeaderID] = msg.UUID
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
		headers[k] = v
	}
	hj, err := json.Marshal(headers)
	if err != nil { // a map of valid strings always encodes
		return row{}, fmt.Errorf("%w: encode headers: %w", ErrInvalidMessage, err)
	}
	payload := []byte(msg.Payload)
	if payload == nil {
		payload = []byte{} // the column is NOT NULL; an empty value is not no value
	}
	if size := len(key) + jsonbTextLen(headers) + len(payload); size > o.cfg.MaxRecordBytes {
		return row{}, fmt.Errorf("%w: %d bytes (key %d, headers %d, payload %d), more than %d",
			ErrTooLarge, size, len(key), jsonbTextLen(headers), len(payload), o.cfg.MaxRecordBytes)
	}
	return row{key: key, headers: hj, payload: payload}, nil
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
