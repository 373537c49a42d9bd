package otlpsink

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteTree writes the spans of one trace as a tree: each span under its
// parent, siblings in start order, with its service, kind and duration. A
// span whose parent is not among spans (the remote caller's, or one not
// received) is a root.
func WriteTree(w io.Writer, spans []Span) {
	ids := make(map[string]bool, len(spans))
	for _, sp := range spans {
		ids[sp.SpanID] = true
	}
	children := map[string][]Span{}
	var roots []Span
	for _, sp := range TraceOf(spans, traceIDOf(spans)) {
		if sp.ParentSpanID != "" && ids[sp.ParentSpanID] {
			children[sp.ParentSpanID] = append(children[sp.ParentSpanID], sp)
		} else {
			roots = append(roots, sp)
		}
	}
	var walk func(sp Span, depth int)
	walk = func(sp Span, depth int) {
		status := ""
		if sp.StatusError {
			status = " ERROR"
		}
		fmt.Fprintf(w, "%s%s  [%s, %s, %s]%s\n", strings.Repeat("  ", depth), sp.Name, sp.Service, sp.Kind,
			sp.End.Sub(sp.Start).Round(10*time.Microsecond), status)
		for _, c := range children[sp.SpanID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
}

func traceIDOf(spans []Span) string {
	if len(spans) == 0 {
		return ""
	}
	return spans[0].TraceID
}
