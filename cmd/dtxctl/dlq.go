package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/topic"
)

// headerReplayedAt is the header `dtxctl dlq replay` adds to a replayed
// record: when it was replayed, RFC 3339 in UTC.
const headerReplayedAt = "dtx_replayed_at"

// headerReplayedFrom is the header `dtxctl dlq replay` adds to a replayed
// record: the dead letter it was replayed from, "<topic>/<partition>:<offset>".
const headerReplayedFrom = "dtx_replayed_from"

// deadLetterHeaders are the headers the DeadLetter middleware adds to a
// dead letter; replay removes them.
var deadLetterHeaders = []string{
	messaging.HeaderDLQReason,
	messaging.HeaderDLQOriginalTopic,
	messaging.HeaderDLQOriginalPartition,
	messaging.HeaderDLQOriginalOffset,
	messaging.HeaderDLQConsumerGroup,
	messaging.HeaderDLQTime,
}

func dlqCommands() *command {
	return &command{
		name:    "dlq",
		summary: "List, show and replay dead letters (messages a consumer set aside for good).",
		sub: []*command{
			{name: "list", summary: "List dead letters, oldest first (--original-topic, --id, --reason, --since, --until).", run: runDLQList},
			{name: "show", summary: "Show one dead letter whole: headers and payload.", run: runDLQShow},
			{name: "replay", summary: "Publish selected dead letters back to their original topic, unchanged.", run: runDLQReplay},
		},
	}
}

const dlqHelp = `The dead-letter topic of a topic is "<topic>.dlq". A consumer that fails on a
message for good (it does not decode, breaks its schema, has an unknown type, its
handler failed permanently or kept failing) publishes it there unchanged, with the
headers dtx_dlq_reason, dtx_dlq_original_topic, dtx_dlq_original_partition,
dtx_dlq_original_offset, dtx_dlq_consumer_group and dtx_dlq_time.

By default dtxctl reads the dead-letter topic of the orchestrator's reply topic
(--topic-prefix, --reply-topic) and, with --definitions, those of the saga
definitions' trigger topics; --topic names others. It reads each partition from its
start (or from --since) up to the end it had when the command started, then stops.
A dead letter is named by "<partition>:<offset>" ("<topic>/<partition>:<offset>"
when several topics are read) or by its message id (ce_id).`

// dlqSettings are the settings shared by `dtxctl dlq list|show|replay`.
type dlqSettings struct {
	brokers     string
	topics      stringList
	prefix      string
	replyTopic  string
	definitions string
	timeout     time.Duration
	sec         kafkaSecurity
}

func (s *dlqSettings) register(f *flags) {
	f.fs.StringVar(&s.brokers, "kafka-brokers", "127.0.0.1:9092", "Kafka seed `BROKERS`, comma-separated host:port")
	f.env("kafka-brokers", "DTX_KAFKA_BROKERS", false)
	f.fs.Var(&s.topics, "topic", "dead-letter `TOPIC` to read; repeatable, or comma-separated (default: the orchestrator's, see below)")
	f.fs.StringVar(&s.prefix, "topic-prefix", "", "`PREFIX` of the built-in topic names, as given to the orchestrator")
	f.env("topic-prefix", "DTX_TOPIC_PREFIX", false)
	f.fs.StringVar(&s.replyTopic, "reply-topic", "", "the orchestrator's reply `TOPIC`, whose dead-letter topic is read by default (default: the prefix, then "+saga.DefaultReplyTopic+")")
	f.env("reply-topic", "DTX_REPLY_TOPIC", false)
	f.fs.StringVar(&s.definitions, "definitions", "", "`DIR` of saga definitions: read the dead-letter topics of their trigger topics too (when --topic is not given)")
	f.env("definitions", "DTX_DEFINITIONS", false)
	f.fs.DurationVar(&s.timeout, "timeout", 60*time.Second, "limit of the whole command (`DURATION`)")
	s.sec.register(f)
}

func (s *dlqSettings) validate(cio *cmdIO) error {
	var errs []error
	if len(splitComma(s.brokers)) == 0 {
		errs = append(errs, errors.New("--kafka-brokers (DTX_KAFKA_BROKERS) names no broker"))
	}
	for _, t := range s.topics {
		if err := topic.ValidateName(t); err != nil {
			errs = append(errs, fmt.Errorf("--topic %q: %w", t, err))
		}
	}
	if s.timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %s is not positive", s.timeout))
	}
	if err := s.sec.load(cio.stderr, cio.path); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// deadLetterTopics returns the dead-letter topics to read: --topic, else
// those of the orchestrator's consumed topics.
func (s *dlqSettings) deadLetterTopics() ([]string, error) {
	if len(s.topics) > 0 {
		out := slices.Clone([]string(s.topics))
		slices.Sort(out)
		return slices.Compact(out), nil
	}
	var reg *saga.Registry
	if s.definitions != "" {
		var err error
		if reg, err = loadDefinitions(s.definitions); err != nil {
			return nil, err
		}
	}
	return topic.ForSagas(reg, topic.SagaParams{Prefix: s.prefix, ReplyTopic: s.replyTopic}).DeadLetters, nil
}

// withKafka connects to Kafka, checks that the dead-letter topics exist and
// calls fn with them, within --timeout.
func (s *dlqSettings) withKafka(ctx context.Context, fn func(ctx context.Context, cl *kgo.Client, adm *kadm.Client, topics []string) error) error {
	topics, err := s.deadLetterTopics()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	brokers := splitComma(s.brokers)
	cl, err := kgo.NewClient(s.sec.clientOpts(brokers)...)
	if err != nil {
		return fmt.Errorf("--kafka-brokers (DTX_KAFKA_BROKERS): %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	missing, err := topic.Missing(ctx, adm, topics)
	if err != nil {
		return fmt.Errorf("kafka at %s: %w", strings.Join(brokers, ","), err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("dead-letter topic %s does not exist: name the dead-letter topic with --topic, "+
			"or create the deployment's topics with dtxctl topics apply", strings.Join(missing, ", "))
	}
	return fn(ctx, cl, adm, topics)
}

// clientOpts returns the options of a Kafka client of the settings.
func (s *dlqSettings) clientOpts() []kgo.Opt { return s.sec.clientOpts(splitComma(s.brokers)) }

// timeFlag is a --since or --until value: an RFC 3339 time, or a duration
// meaning that long before now.
type timeFlag struct {
	t   time.Time
	set bool
	now func() time.Time
}

func (f *timeFlag) String() string {
	if !f.set {
		return ""
	}
	return f.t.Format(time.RFC3339)
}

func (f *timeFlag) Set(v string) error {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		f.t, f.set = t, true
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is neither an RFC 3339 time nor a positive duration", v)
	}
	f.t, f.set = f.now().Add(-d), true
	return nil
}

// dlqFilter selects dead letters.
type dlqFilter struct {
	originalTopic string
	ids           stringList
	reason        string
	since, until  timeFlag
}

func (d *dlqFilter) register(f *flags) {
	d.since.now, d.until.now = time.Now, time.Now
	f.fs.StringVar(&d.originalTopic, "original-topic", "", "keep dead letters consumed from this `TOPIC`")
	f.fs.Var(&d.ids, "id", "keep the dead letter of this message `ID` (ce_id); repeatable, or comma-separated")
	f.fs.StringVar(&d.reason, "reason", "", "keep dead letters whose reason contains `TEXT` (case-insensitive)")
	f.fs.Var(&d.since, "since", "keep dead letters set aside at or after `TIME` (RFC 3339, or a duration such as 2h meaning that long ago)")
	f.fs.Var(&d.until, "until", "keep dead letters set aside before `TIME` (RFC 3339, or a duration meaning that long ago)")
}

// empty reports whether the filter selects everything.
func (d *dlqFilter) empty() bool {
	return d.originalTopic == "" && len(d.ids) == 0 && d.reason == "" && !d.since.set && !d.until.set
}

func (d *dlqFilter) keep(l deadLetterRecord) bool {
	switch {
	case d.originalTopic != "" && l.OriginalTopic != d.originalTopic:
		return false
	case len(d.ids) > 0 && !slices.Contains(d.ids, l.MessageID):
		return false
	case d.reason != "" && !strings.Contains(strings.ToLower(l.Reason), strings.ToLower(d.reason)):
		return false
	case d.since.set && l.Time.Before(d.since.t):
		return false
	case d.until.set && !l.Time.Before(d.until.t):
		return false
	}
	return true
}

// deadLetterRecord is a dead letter as dtxctl prints it.
type deadLetterRecord struct {
	Topic             string            `json:"topic"`
	Partition         int32             `json:"partition"`
	Offset            int64             `json:"offset"`
	Time              time.Time         `json:"time"`
	MessageID         string            `json:"message_id"`
	Type              string            `json:"type"`
	Key               string            `json:"key,omitempty"`
	OriginalTopic     string            `json:"original_topic"`
	OriginalPartition string            `json:"original_partition,omitempty"`
	OriginalOffset    string            `json:"original_offset,omitempty"`
	ConsumerGroup     string            `json:"consumer_group,omitempty"`
	Reason            string            `json:"reason"`
	ReplayedAt        string            `json:"replayed_at,omitempty"`
	Headers           map[string]string `json:"headers,omitempty"`
	Payload           json.RawMessage   `json:"payload,omitempty"`

	rec *kgo.Record
}

// position is "<partition>:<offset>", prefixed with the topic when several
// topics are read.
func (l deadLetterRecord) position(withTopic bool) string {
	p := fmt.Sprintf("%d:%d", l.Partition, l.Offset)
	if withTopic {
		return l.Topic + "/" + p
	}
	return p
}

func newDeadLetterRecord(r *kgo.Record) deadLetterRecord {
	h := map[string]string{}
	for _, kv := range r.Headers {
		h[kv.Key] = string(kv.Value) // the last of repeated keys wins, as for a Subscriber
	}
	l := deadLetterRecord{
		Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
		Time: r.Timestamp.UTC(), MessageID: h[messaging.HeaderID], Type: h[messaging.HeaderType], Key: string(r.Key),
		OriginalTopic: h[messaging.HeaderDLQOriginalTopic], OriginalPartition: h[messaging.HeaderDLQOriginalPartition],
		OriginalOffset: h[messaging.HeaderDLQOriginalOffset], ConsumerGroup: h[messaging.HeaderDLQConsumerGroup],
		Reason: h[messaging.HeaderDLQReason], ReplayedAt: h[headerReplayedAt],
		rec: r,
	}
	if t, err := time.Parse(time.RFC3339Nano, h[messaging.HeaderDLQTime]); err == nil {
		l.Time = t.UTC()
	}
	return l
}

// withBody fills Headers and Payload, for show: the payload as indented
// JSON when it is JSON, else as a JSON string.
func (l deadLetterRecord) withBody() deadLetterRecord {
	l.Headers = map[string]string{}
	for _, kv := range l.rec.Headers {
		l.Headers[kv.Key] = string(kv.Value)
	}
	var buf bytes.Buffer
	switch {
	case len(l.rec.Value) == 0:
		l.Payload = json.RawMessage("null")
	case json.Valid(l.rec.Value) && json.Indent(&buf, l.rec.Value, "", "  ") == nil:
		l.Payload = buf.Bytes()
	default:
		s := string(l.rec.Value)
		if !utf8.ValidString(s) {
			s = strings.ToValidUTF8(s, "\uFFFD")
		}
		b, _ := json.Marshal(s)
		l.Payload = b
	}
	return l
}

// span is the offsets of one partition to read: [start, end).
type span struct{ start, end int64 }

// readRanges returns the offsets to read of every partition of topics: from
// the start (or the first record at or after since) to the end offset as it
// is now.
func readRanges(ctx context.Context, adm *kadm.Client, topics []string, since *time.Time) (map[string]map[int32]span, error) {
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list the end offsets of %s: %w", strings.Join(topics, ", "), err)
	}
	var starts kadm.ListedOffsets
	if since != nil {
		starts, err = adm.ListOffsetsAfterMilli(ctx, since.UnixMilli(), topics...)
	} else {
		starts, err = adm.ListStartOffsets(ctx, topics...)
	}
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list the start offsets of %s: %w", strings.Join(topics, ", "), err)
	}
	out := map[string]map[int32]span{}
	ends.Each(func(e kadm.ListedOffset) {
		s, ok := starts.Lookup(e.Topic, e.Partition)
		if !ok || s.Offset < 0 || s.Offset >= e.Offset {
			return
		}
		if out[e.Topic] == nil {
			out[e.Topic] = map[int32]span{}
		}
		out[e.Topic][e.Partition] = span{start: s.Offset, end: e.Offset}
	})
	return out, nil
}

// readRecords reads the records of ranges with a client of the options conn
// (brokers, client id, security) and calls fn with each, in offset order per
// partition, until every range is read. It stops early when fn
// returns errStop.
func readRecords(ctx context.Context, conn []kgo.Opt, ranges map[string]map[int32]span, fn func(*kgo.Record) error) error {
	offsets := map[string]map[int32]kgo.Offset{}
	left := 0
	for t, ps := range ranges {
		offsets[t] = map[int32]kgo.Offset{}
		for p, s := range ps {
			offsets[t][p] = kgo.NewOffset().At(s.start)
			left++
		}
	}
	if left == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(slices.Clip(conn), kgo.ConsumePartitions(offsets))...)
	if err != nil {
		return fmt.Errorf("--kafka-brokers (DTX_KAFKA_BROKERS): %w", err)
	}
	defer cl.Close()
	done := map[string]map[int32]bool{}
	for left > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read the dead letters: %w (still %d partitions to read; raise --timeout?)", err, left)
		}
		var fetchErr error
		fetches.EachError(func(t string, p int32, err error) {
			fetchErr = errors.Join(fetchErr, fmt.Errorf("fetch %s/%d: %w", t, p, err))
		})
		if fetchErr != nil {
			return fetchErr
		}
		var stopErr error
		fetches.EachRecord(func(r *kgo.Record) {
			s := ranges[r.Topic][r.Partition]
			if stopErr != nil || done[r.Topic][r.Partition] || r.Offset >= s.end {
				return
			}
			if err := fn(r); err != nil {
				stopErr = err
				return
			}
			if r.Offset+1 >= s.end {
				if done[r.Topic] == nil {
					done[r.Topic] = map[int32]bool{}
				}
				done[r.Topic][r.Partition] = true
				left--
			}
		})
		if errors.Is(stopErr, errStop) {
			return nil
		}
		if stopErr != nil {
			return stopErr
		}
	}
	return nil
}

// errStop ends readRecords early without an error.
var errStop = errors.New("stop")

// selectDeadLetters reads the dead letters of topics that filter keeps, at
// most limit of them (0: no limit), oldest first per partition.
func selectDeadLetters(ctx context.Context, conn []kgo.Opt, adm *kadm.Client, topics []string, filter *dlqFilter, limit int) ([]deadLetterRecord, error) {
	var since *time.Time
	if filter.since.set {
		since = &filter.since.t
	}
	ranges, err := readRanges(ctx, adm, topics, since)
	if err != nil {
		return nil, err
	}
	var out []deadLetterRecord
	err = readRecords(ctx, conn, ranges, func(r *kgo.Record) error {
		l := newDeadLetterRecord(r)
		if !filter.keep(l) {
			return nil
		}
		out = append(out, l)
		if limit > 0 && len(out) >= limit {
			return errStop
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b deadLetterRecord) int {
		return cmp.Or(a.Time.Compare(b.Time), strings.Compare(a.Topic, b.Topic),
			cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	return out, nil
}

func printDeadLetters(w io.Writer, list []deadLetterRecord, withTopic bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POSITION\tTIME\tMESSAGE ID\tTYPE\tORIGINAL TOPIC\tREASON")
	for _, l := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.position(withTopic), l.Time.Format(time.RFC3339),
			dash(l.MessageID), dash(l.Type), dash(l.OriginalTopic), dash(oneLine(l.Reason, 120)))
	}
	return tw.Flush()
}

// oneLine returns s on one line, cut to n characters.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-3]) + "..."
}

func runDLQList(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		s      dlqSettings
		filter dlqFilter
		limit  int
		asJSON bool
	)
	f := newFlags(cio, "List dead letters, oldest first: position, time set aside, message id, type,\n"+
		"original topic and reason. It changes nothing.\n\n"+dlqHelp, "[flags]")
	s.register(f)
	filter.register(f)
	f.fs.IntVar(&limit, "limit", 100, "show at most `N` dead letters (1..100000)")
	f.fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	if err := f.parse(cio, args); err != nil {
		return err
	}
	if err := s.validate(cio); err != nil {
		printSettingsError(cio.stderr, cio.path, err)
		return errUsage
	}
	if limit < 1 || limit > 100000 {
		fmt.Fprintf(cio.stderr, "%s: --limit %d is outside 1..100000\n", cio.path, limit)
		return errUsage
	}
	return s.withKafka(ctx, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client, topics []string) error {
		list, err := selectDeadLetters(ctx, s.clientOpts(), adm, topics, &filter, limit)
		if err != nil {
			return err
		}
		if asJSON {
			if list == nil {
				list = []deadLetterRecord{}
			}
			return printJSON(cio.stdout, list)
		}
		return printDeadLetters(cio.stdout, list, len(topics) > 1)
	})
}

// positionRE matches "[<topic>/]<partition>:<offset>".
var positionRE = regexp.MustCompile(`^(?:([a-zA-Z0-9._-]+)/)?([0-9]+):([0-9]+)$`)

func runDLQShow(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		s      dlqSettings
		asJSON bool
	)
	f := newFlags(cio, "Show one dead letter whole: where it was read, why it was set aside, every header\n"+
		"and the payload (indented when it is JSON). It changes nothing.\n\n"+dlqHelp,
		"<[TOPIC/]PARTITION:OFFSET | MESSAGE-ID> [flags]")
	s.register(f)
	f.fs.BoolVar(&asJSON, "json", false, "print JSON instead of text")
	flagArgs, positional := splitPositional(f.fs, args)
	if err := f.parse(cio, flagArgs); err != nil {
		return err
	}
	if len(positional) != 1 {
		fmt.Fprintf(cio.stderr, "%s: want one dead letter, [TOPIC/]PARTITION:OFFSET or MESSAGE-ID; got %d arguments\n", cio.path, len(positional))
		return errUsage
	}
	if err := s.validate(cio); err != nil {
		printSettingsError(cio.stderr, cio.path, err)
		return errUsage
	}
	which := positional[0]
	m := positionRE.FindStringSubmatch(which)
	if m != nil && m[1] != "" && len(s.topics) == 0 {
		s.topics = stringList{m[1]}
	}
	return s.withKafka(ctx, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client, topics []string) error {
		conn := s.clientOpts()
		var found []deadLetterRecord
		if m != nil {
			t := m[1]
			if t == "" {
				if len(topics) > 1 {
					return fmt.Errorf("%s: %d dead-letter topics are read (%s): name one, TOPIC/%s, or give --topic",
						which, len(topics), strings.Join(topics, ", "), which)
				}
				t = topics[0]
			}
			p, perr := strconv.ParseInt(m[2], 10, 32)
			o, oerr := strconv.ParseInt(m[3], 10, 64)
			if perr != nil || oerr != nil {
				return fmt.Errorf("%s is not PARTITION:OFFSET", which)
			}
			ranges, err := readRanges(ctx, adm, []string{t}, nil)
			if err != nil {
				return err
			}
			sp, ok := ranges[t][int32(p)]
			if !ok || o < sp.start || o >= sp.end {
				return fmt.Errorf("no dead letter at %s/%d:%d", t, p, o)
			}
			err = readRecords(ctx, conn, map[string]map[int32]span{t: {int32(p): {start: o, end: o + 1}}}, func(r *kgo.Record) error {
				if r.Offset == o {
					found = append(found, newDeadLetterRecord(r))
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(found) == 0 {
				return fmt.Errorf("no dead letter at %s/%d:%d", t, p, o)
			}
		} else {
			var err error
			found, err = selectDeadLetters(ctx, conn, adm, topics, &dlqFilter{ids: stringList{which}}, 0)
			if err != nil {
				return err
			}
			if len(found) == 0 {
				return fmt.Errorf("no dead letter of message id %q in %s", which, strings.Join(topics, ", "))
			}
		}
		for i := range found {
			found[i] = found[i].withBody()
		}
		if asJSON {
			if len(found) == 1 {
				return printJSON(cio.stdout, found[0])
			}
			return printJSON(cio.stdout, found)
		}
		for i, l := range found {
			if i > 0 {
				fmt.Fprintln(cio.stdout)
			}
			printDeadLetter(cio.stdout, l)
		}
		if len(found) > 1 {
			fmt.Fprintf(cio.stderr, "%s: message %s was dead-lettered %d times\n", cio.path, which, len(found))
		}
		return nil
	})
}

func printDeadLetter(w io.Writer, l deadLetterRecord) {
	fmt.Fprintf(w, "position       %s\n", l.position(true))
	fmt.Fprintf(w, "time           %s\n", l.Time.Format(time.RFC3339Nano))
	fmt.Fprintf(w, "message id     %s\n", dash(l.MessageID))
	fmt.Fprintf(w, "type           %s\n", dash(l.Type))
	fmt.Fprintf(w, "key            %s\n", dash(l.Key))
	orig := dash(l.OriginalTopic)
	if l.OriginalPartition != "" || l.OriginalOffset != "" {
		orig += fmt.Sprintf(" (partition %s, offset %s)", dash(l.OriginalPartition), dash(l.OriginalOffset))
	}
	fmt.Fprintf(w, "original topic %s\n", orig)
	fmt.Fprintf(w, "consumer group %s\n", dash(l.ConsumerGroup))
	if l.ReplayedAt != "" {
		fmt.Fprintf(w, "replayed at    %s (this dead letter is itself a replayed message)\n", l.ReplayedAt)
	}
	fmt.Fprintf(w, "reason         %s\n", dash(l.Reason))
	fmt.Fprintln(w, "\nheaders:")
	keys := make([]string, 0, len(l.Headers))
	for k := range l.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %s\n", k, l.Headers[k])
	}
	fmt.Fprintf(w, "\npayload (%d bytes):\n%s\n", len(l.rec.Value), l.Payload)
}

// replayRecord returns the record that replays l: its original topic, key,
// value and headers, without the dead-letter headers, with
// headerReplayedAt and headerReplayedFrom.
func replayRecord(l deadLetterRecord, now time.Time) *kgo.Record {
	r := &kgo.Record{Topic: l.OriginalTopic, Key: bytes.Clone(l.rec.Key), Value: bytes.Clone(l.rec.Value)}
	if l.rec.Key == nil {
		r.Key = nil
	}
	for _, h := range l.rec.Headers {
		if slices.Contains(deadLetterHeaders, h.Key) || h.Key == headerReplayedAt || h.Key == headerReplayedFrom {
			continue
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: bytes.Clone(h.Value)})
	}
	r.Headers = append(r.Headers,
		kgo.RecordHeader{Key: headerReplayedAt, Value: []byte(now.UTC().Format(time.RFC3339Nano))},
		kgo.RecordHeader{Key: headerReplayedFrom, Value: []byte(l.position(true))},
	)
	return r
}

// replayResult is one line of what `dlq replay` prints.
type replayResult struct {
	From      string `json:"from"`
	To        string `json:"to"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	MessageID string `json:"message_id"`
	Type      string `json:"type"`
	DryRun    bool   `json:"dry_run,omitempty"`
}

func runDLQReplay(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		s      dlqSettings
		filter dlqFilter
		all    bool
		dryRun bool
		limit  int
		asJSON bool
	)
	f := newFlags(cio, "Publish the selected dead letters back to their original topic (header\n"+
		"dtx_dlq_original_topic) with their original key, value and headers, without the\n"+
		"dead-letter headers, plus dtx_replayed_at (when) and dtx_replayed_from (the dead\n"+
		"letter's position). The message id is unchanged, so a consumer that handled the\n"+
		"message already (its inbox holds the id) ignores the copy. Replaying does not remove\n"+
		"the dead letter: Kafka cannot delete one record, so a later replay with the same\n"+
		"selection publishes it again, which the inbox makes harmless. Without a filter it\n"+
		"refuses unless --all is given; it publishes nothing when a dead letter has no\n"+
		"original topic or that topic does not exist.\n\n"+dlqHelp, "(--id ID | --original-topic T | --reason TEXT | --since T | --until T | --all) [flags]")
	s.register(f)
	filter.register(f)
	f.fs.BoolVar(&all, "all", false, "replay every dead letter of the topics read (needed when no filter is given)")
	f.fs.BoolVar(&dryRun, "dry-run", false, "print what would be replayed, publish nothing")
	f.fs.IntVar(&limit, "limit", 0, "replay at most the first `N` selected dead letters (0: all of them)")
	f.fs.BoolVar(&asJSON, "json", false, "print JSON instead of text")
	if err := f.parse(cio, args); err != nil {
		return err
	}
	if err := s.validate(cio); err != nil {
		printSettingsError(cio.stderr, cio.path, err)
		return errUsage
	}
	if limit < 0 {
		fmt.Fprintf(cio.stderr, "%s: --limit %d is negative\n", cio.path, limit)
		return errUsage
	}
	if filter.empty() && !all {
		fmt.Fprintf(cio.stderr, "%s: no filter: select dead letters with --id, --original-topic, --reason, --since or --until, or replay every one with --all\n", cio.path)
		return errUsage
	}
	return s.withKafka(ctx, func(ctx context.Context, cl *kgo.Client, adm *kadm.Client, topics []string) error {
		list, err := selectDeadLetters(ctx, s.clientOpts(), adm, topics, &filter, limit)
		if err != nil {
			return err
		}
		var originals []string
		for _, l := range list {
			if l.OriginalTopic == "" {
				return fmt.Errorf("dead letter %s (message %s) has no %s header: its original topic is unknown; nothing was replayed",
					l.position(true), dash(l.MessageID), messaging.HeaderDLQOriginalTopic)
			}
			if !slices.Contains(originals, l.OriginalTopic) {
				originals = append(originals, l.OriginalTopic)
			}
		}
		missing, err := topic.Missing(ctx, adm, originals)
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			return fmt.Errorf("original topic %s does not exist: create it (dtxctl topics apply) and replay again; nothing was replayed",
				strings.Join(missing, ", "))
		}
		now := time.Now()
		results := make([]replayResult, 0, len(list))
		recs := make([]*kgo.Record, 0, len(list))
		for _, l := range list {
			recs = append(recs, replayRecord(l, now))
			results = append(results, replayResult{From: l.position(true), To: l.OriginalTopic, Partition: -1, Offset: -1,
				MessageID: l.MessageID, Type: l.Type, DryRun: dryRun})
		}
		if !dryRun && len(recs) > 0 {
			// Produced in the order selected; records of one key keep it.
			pr := cl.ProduceSync(ctx, recs...)
			for i, r := range pr {
				if r.Err != nil {
					ok := 0
					for _, x := range pr {
						if x.Err == nil {
							ok++
						}
					}
					return fmt.Errorf("replay %s to %s: %w (%d of %d replayed)", results[i].From, results[i].To, r.Err, ok, len(pr))
				}
				results[i].Partition, results[i].Offset = r.Record.Partition, r.Record.Offset
			}
		}
		if asJSON {
			return printJSON(cio.stdout, results)
		}
		verb := "replayed"
		if dryRun {
			verb = "would replay"
		}
		for _, r := range results {
			to := r.To
			if !dryRun {
				to = fmt.Sprintf("%s/%d:%d", r.To, r.Partition, r.Offset)
			}
			fmt.Fprintf(cio.stdout, "%s %s -> %s  message %s  %s\n", verb, r.From, to, dash(r.MessageID), dash(r.Type))
		}
		fmt.Fprintf(cio.stdout, "%s %d dead letters (they stay in the dead-letter topic)\n", verb, len(results))
		return nil
	})
}
