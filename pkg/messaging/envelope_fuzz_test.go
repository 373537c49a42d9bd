package messaging_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/vextrus/dtx/pkg/messaging"
)

// fuzzMetadata encodes metadata for FuzzDecode: one "key=value" line per
// entry, in key order.
func fuzzMetadata(md message.Metadata) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(md)) {
		b.WriteString(k + "=" + md[k] + "\n")
	}
	return b.String()
}

// parseFuzzMetadata decodes what fuzzMetadata encodes; a line without '='
// is a key with an empty value, a repeated key keeps its last value.
func parseFuzzMetadata(s string) message.Metadata {
	md := message.Metadata{}
	for line := range strings.SplitSeq(s, "\n") {
		if line == "" {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		md[k] = v
	}
	return md
}

// FuzzDecode feeds Decode arbitrary metadata and payloads. Decode must never
// panic; what it rejects it rejects with a *DecodeError; and what it accepts
// must survive ToMessage and Decode unchanged.
func FuzzDecode(f *testing.F) {
	full, err := fullEnvelope().ToMessage()
	require.NoError(f, err)
	f.Add(fuzzMetadata(full.Metadata), []byte(full.Payload))
	f.Add("ce_specversion=1.0\nce_id=1\nce_type=t\nce_source=/s\n", []byte(nil))
	f.Add("ce_specversion=1.0\nce_id=1\nce_type=t\nce_source=/s\ncontent-type=text/plain\n", []byte("\xff not JSON"))
	f.Add("ce_specversion=1.0\nce_id=1\nce_type=t\nce_source=/s\nce_time=2026-11-23T10:15:02.5+01:00\n"+
		"ce_partitionkey=k\nce_tenant=acme\nce_empty=\n", []byte(`{"a":[1,2,{"b":null}]}`))
	f.Add("ce_specversion=1.0\nce_id=1\nce_type=t\nce_source=/s\nce_time=9999-12-31T23:59:59-01:00\n", []byte(`1`))
	f.Add("ce_specversion=1.0\nce_id=1\nce_type=t\nce_source=/s\nce_schemaversion=007\n", []byte(`[]`))
	f.Add("ce_specversion=0.3\nce_id=1\nce_type=t\nce_source=/s\n", []byte(`{}`))
	f.Add("ce_specversion=1.0\nce_id= \nce_type=t\nce_source=%zz\nce_Bad=x\nce_datacontenttype=x\n", []byte(`{`))
	f.Add("ce_specversion=1.0\nce_id=1\nce_type=t\nce_source=/s\ncontent-type=application/vnd.x+json; charset=utf-8\n"+
		"ce_dataschema=https://example.com/s.json\nce_subject=\u00a0x\ndtx_partition_key=\u0085\n", []byte(`"s"`))

	f.Fuzz(func(t *testing.T, meta string, payload []byte) {
		msg := message.NewMessage("fuzz", payload)
		msg.Metadata = parseFuzzMetadata(meta)

		e, err := messaging.Decode(msg)
		if err != nil {
			var decErr *messaging.DecodeError
			require.ErrorAs(t, err, &decErr)
			require.ErrorIs(t, err, messaging.ErrInvalidEnvelope)
			return
		}
		require.NoError(t, e.Validate())

		out, err := e.ToMessage()
		require.NoError(t, err, "Decode accepted what ToMessage rejects")
		require.Equal(t, e.ID, out.UUID)

		again, err := messaging.Decode(out)
		require.NoError(t, err, "Decode rejected what ToMessage wrote: %v", out.Metadata)
		require.True(t, e.Time.Equal(again.Time), "time: %s became %s", e.Time, again.Time)
		require.Equal(t, e, again)
	})
}
