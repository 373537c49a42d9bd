package otlpsink

import (
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Span is one span as the sink keeps it.
type Span struct {
	TraceID      string            `json:"trace_id"`
	SpanID       string            `json:"span_id"`
	ParentSpanID string            `json:"parent_span_id,omitempty"`
	Name         string            `json:"name"`
	Kind         string            `json:"kind"`
	Service      string            `json:"service"`
	Start        time.Time         `json:"start"`
	End          time.Time         `json:"end"`
	StatusError  bool              `json:"status_error,omitempty"`
	Attributes   map[string]string `json:"attributes,omitempty"`
	Links        []Link            `json:"links,omitempty"`
}

// Link is a span's link to another span.
type Link struct {
	TraceID string `json:"trace_id"`
	SpanID  string `json:"span_id"`
}

// Sink is an OTLP/HTTP traces endpoint. The zero value is not usable; use
// New.
type Sink struct {
	mu    sync.Mutex
	spans []Span
	w     io.Writer
	err   error
	reqs  int
	seen  chan struct{} // closed and replaced whenever spans arrive
}

// New returns a sink that keeps spans in memory and, if w is not nil,
// writes each as a JSON line to w.
func New(w io.Writer) *Sink {
	return &Sink{w: w, seen: make(chan struct{})}
}

// ServeHTTP receives POST /v1/traces.
func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body := io.Reader(r.Body)
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, "gzip: "+err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, "read: "+err.Error(), http.StatusBadRequest)
		return
	}
	var req coltrace.ExportTraceServiceRequest
	jsonBody := strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")
	if jsonBody {
		err = protojson.Unmarshal(raw, &req)
	} else {
		err = proto.Unmarshal(raw, &req)
	}
	if err != nil {
		http.Error(w, "not an ExportTraceServiceRequest: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := s.add(convert(&req)); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var out []byte
	if jsonBody {
		w.Header().Set("Content-Type", "application/json")
		out, _ = protojson.Marshal(&coltrace.ExportTraceServiceResponse{})
	} else {
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ = proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	}
	_, _ = w.Write(out)
}

func (s *Sink) add(spans []Span) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w != nil {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		for _, sp := range spans {
			_ = enc.Encode(sp) // a Span always encodes
		}
		if _, err := io.WriteString(s.w, b.String()); err != nil {
			s.err = fmt.Errorf("otlpsink: write spans: %w", err)
			return s.err
		}
	}
	s.spans = append(s.spans, spans...)
	s.reqs++
	close(s.seen)
	s.seen = make(chan struct{})
	return nil
}

// Err returns the last error writing spans, if any.
func (s *Sink) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Requests returns how many export requests the sink has kept.
func (s *Sink) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reqs
}

// Spans returns a copy of every span received, in arrival order.
func (s *Sink) Spans() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.spans)
}

// Trace returns the spans of traceID (hex), in start order.
func (s *Sink) Trace(traceID string) []Span {
	return TraceOf(s.Spans(), traceID)
}

// Changed returns a channel closed when spans next arrive.
func (s *Sink) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

// TraceOf returns the spans of traceID among spans, in start order.
func TraceOf(spans []Span, traceID string) []Span {
	traceID = strings.ToLower(traceID)
	var out []Span
	for _, sp := range spans {
		if sp.TraceID == traceID {
			out = append(out, sp)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// Services returns the distinct service names of spans, sorted.
func Services(spans []Span) []string {
	var out []string
	for _, sp := range spans {
		if !slices.Contains(out, sp.Service) {
			out = append(out, sp.Service)
		}
	}
	slices.Sort(out)
	return out
}

// ReadJSONLines reads spans a Sink wrote as JSON lines. A line that does
// not decode is an error naming its number.
func ReadJSONLines(r io.Reader) ([]Span, error) {
	dec := json.NewDecoder(r)
	var out []Span
	for n := 1; ; n++ {
		var sp Span
		err := dec.Decode(&sp)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("otlpsink: span %d: %w", n, err)
		}
		out = append(out, sp)
	}
}

func convert(req *coltrace.ExportTraceServiceRequest) []Span {
	var out []Span
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, p := range ss.GetSpans() {
				sp := Span{
					TraceID: hex.EncodeToString(p.GetTraceId()), SpanID: hex.EncodeToString(p.GetSpanId()),
					ParentSpanID: hex.EncodeToString(p.GetParentSpanId()), Name: p.GetName(),
					Kind: kindName(p.GetKind()), Service: service,
					Start:       time.Unix(0, int64(p.GetStartTimeUnixNano())).UTC(), //nolint:gosec // nanoseconds since 1970 fit
					End:         time.Unix(0, int64(p.GetEndTimeUnixNano())).UTC(),   //nolint:gosec // nanoseconds since 1970 fit
					StatusError: p.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
				}
				for _, a := range p.GetAttributes() {
					if sp.Attributes == nil {
						sp.Attributes = map[string]string{}
					}
					sp.Attributes[a.GetKey()] = attrString(a.GetValue())
				}
				for _, l := range p.GetLinks() {
					sp.Links = append(sp.Links, Link{TraceID: hex.EncodeToString(l.GetTraceId()), SpanID: hex.EncodeToString(l.GetSpanId())})
				}
				out = append(out, sp)
			}
		}
	}
	return out
}

func kindName(k tracepb.Span_SpanKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "SPAN_KIND_"))
}

func attrString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	}
	return protojson.Format(v)
}
