package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/topic"
)

// exitChanges is the exit status of `dtxctl topics plan --exit-code` when
// apply would create a topic or a topic drifted from its spec.
const exitChanges = 3

// exitError ends a command with a given exit status; what to say has been
// printed already.
type exitError struct{ code int }

func (e exitError) Error() string { return "exit status " + strconv.Itoa(e.code) }

func topicsCommands() *command {
	return &command{
		name:    "topics",
		summary: "Plan and create the Kafka topics a deployment needs (saga definitions and topics files).",
		sub: []*command{
			{name: "plan", summary: "Show which topics would be created and which drifted; changes nothing.", run: runTopicsPlan},
			{name: "apply", summary: "Create the missing topics; report drift without changing it.", run: runTopicsApply},
		},
	}
}

// topicsSettings are the settings of `dtxctl topics plan|apply`.
type topicsSettings struct {
	brokers           string
	definitions       string
	files             topicsFileList
	prefix            string
	replyTopic        string
	eventTopic        string
	partitions        int
	replicationFactor int
	timeout           time.Duration
	sec               kafkaSecurity
}

// topicsFileList is the repeatable --file flag.
type topicsFileList []string

func (l *topicsFileList) String() string { return strings.Join(*l, ",") }

func (l *topicsFileList) Set(v string) error {
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func (s *topicsSettings) register(f *flags) {
	f.fs.StringVar(&s.brokers, "kafka-brokers", "127.0.0.1:9092", "Kafka seed `BROKERS`, comma-separated host:port")
	f.env("kafka-brokers", "DTX_KAFKA_BROKERS", false)
	f.fs.StringVar(&s.definitions, "definitions", "",
		"`DIR` of saga definitions (*.yaml, *.yml) whose topics to include: triggers, commands, compensations, and the .dlq of each topic the orchestrator consumes")
	f.env("definitions", "DTX_DEFINITIONS", false)
	f.fs.Var(&s.files, "file", "topics `FILE` (YAML) listing more topics and their settings; repeatable, or comma-separated")
	f.fs.StringVar(&s.prefix, "topic-prefix", "", "`PREFIX` of the built-in topic names (the saga reply and event topics), as given to the orchestrator")
	f.env("topic-prefix", "DTX_TOPIC_PREFIX", false)
	f.fs.StringVar(&s.replyTopic, "reply-topic", "", "the orchestrator's reply `TOPIC` (default: the prefix, then "+saga.DefaultReplyTopic+")")
	f.env("reply-topic", "DTX_REPLY_TOPIC", false)
	f.fs.StringVar(&s.eventTopic, "event-topic", "", "the orchestrator's lifecycle event `TOPIC` (default: the prefix, then "+saga.DefaultEventTopic+")")
	f.env("event-topic", "DTX_EVENT_TOPIC", false)
	f.fs.IntVar(&s.partitions, "partitions", int(topic.DefaultPartitions),
		"partitions of a topic whose file sets none (`N` >= 1, or -1 for the broker's num.partitions)")
	f.fs.IntVar(&s.replicationFactor, "replication-factor", int(topic.DefaultReplicationFactor),
		"replication factor of a topic whose file sets none (`N` >= 1, or -1 for the broker's default.replication.factor)")
	f.fs.DurationVar(&s.timeout, "timeout", 60*time.Second, "limit of the whole command (`DURATION`)")
	s.sec.register(f)
}

func (s *topicsSettings) validate(cio *cmdIO) error {
	var errs []error
	if len(topicsSplit(s.brokers)) == 0 {
		errs = append(errs, errors.New("--kafka-brokers (DTX_KAFKA_BROKERS) names no broker"))
	}
	if s.partitions != -1 && (s.partitions < 1 || s.partitions > 10000) {
		errs = append(errs, fmt.Errorf("--partitions %d is neither -1 nor within 1..10000", s.partitions))
	}
	if s.replicationFactor != -1 && (s.replicationFactor < 1 || s.replicationFactor > 32) {
		errs = append(errs, fmt.Errorf("--replication-factor %d is neither -1 nor within 1..32", s.replicationFactor))
	}
	if s.timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %s must be positive", s.timeout))
	}
	if err := s.sec.load(cio.stderr, cio.path); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// specs returns the complete specs: the built-in and saga topics, then the
// files' topics, merged and with the defaults applied.
func (s *topicsSettings) specs() ([]topic.Spec, error) {
	var reg *saga.Registry
	if s.definitions != "" {
		defs, err := saga.LoadDir(s.definitions)
		if err != nil {
			return nil, fmt.Errorf("--definitions (DTX_DEFINITIONS): %w", err)
		}
		if reg, err = saga.NewRegistry(defs...); err != nil {
			return nil, fmt.Errorf("--definitions (DTX_DEFINITIONS): %w", err)
		}
	}
	all := topic.ForSagas(reg, topic.SagaParams{Prefix: s.prefix, ReplyTopic: s.replyTopic, EventTopic: s.eventTopic}).Specs()
	for _, f := range s.files {
		specs, err := topic.LoadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
		all = append(all, specs...)
	}
	merged, err := topic.Merge(all...)
	if err != nil {
		return nil, err
	}
	return topic.Defaults{Partitions: int32(s.partitions), ReplicationFactor: int16(s.replicationFactor)}.Apply(merged), nil
}

// withAdmin connects to Kafka and calls fn.
func (s *topicsSettings) withAdmin(ctx context.Context, fn func(ctx context.Context, adm *kadm.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	brokers := topicsSplit(s.brokers)
	cl, err := kgo.NewClient(s.sec.clientOpts(brokers)...)
	if err != nil {
		return fmt.Errorf("--kafka-brokers (DTX_KAFKA_BROKERS): %w", err)
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka at %s: %w", strings.Join(brokers, ","), err)
	}
	return fn(ctx, kadm.NewClient(cl))
}

const topicsHelp = `Topics come from the saga definitions of --definitions (every trigger, command and
compensation topic, the reply and event topics, and the .dlq of each topic the
orchestrator consumes), the built-in reply and event topics (always), and the topics
files of --file, whose format is:

  defaults:                   # optional, for this file's topics
    partitions: 6
    replication_factor: 3
    configs: {min.insync.replicas: 2}
  topics:
    - name: sales.orders
      partitions: 12          # >= 1, or -1 for the broker's default
      configs: {retention.ms: 604800000, cleanup.policy: delete}

A topics file may also give settings to a topic derived from the definitions.
Drift (a topic with fewer or more partitions, another replication factor or other
config values than wanted) is reported, never changed.`

func (s *topicsSettings) parse(cio *cmdIO, args []string, summary string, extra func(f *flags)) error {
	f := newFlags(cio, summary+"\n\n"+topicsHelp, "[flags]")
	s.register(f)
	if extra != nil {
		extra(f)
	}
	if err := f.parse(cio, args); err != nil {
		return err
	}
	if err := s.validate(cio); err != nil {
		printSettingsError(cio.stderr, cio.path, err)
		return errUsage
	}
	return nil
}

func runTopicsPlan(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		s        topicsSettings
		exitCode bool
	)
	err := s.parse(cio, args, "Compare the topics the deployment needs with the cluster and print what `dtxctl topics apply` "+
		"would create and which topics drifted. It changes nothing. Exit status 0, or with --exit-code 3 when something "+
		"would be created or has drifted.", func(f *flags) {
		f.fs.BoolVar(&exitCode, "exit-code", false, "exit with status 3 when a topic would be created or has drifted (0 when nothing would change)")
	})
	if err != nil {
		return err
	}
	specs, err := s.specs()
	if err != nil {
		return err
	}
	return s.withAdmin(ctx, func(ctx context.Context, adm *kadm.Client) error {
		rep, err := topic.Plan(ctx, adm, specs)
		if err != nil {
			return err
		}
		printTopicsTable(cio.stdout, specs, rep, false)
		fmt.Fprintf(cio.stdout, "\nplan: %d to create, %d up to date, %d drifted (drift is reported, never changed)\n",
			len(rep.Create), len(rep.OK), len(rep.Drift))
		if exitCode && rep.Changes() {
			return exitError{code: exitChanges}
		}
		return nil
	})
}

func runTopicsApply(ctx context.Context, cio *cmdIO, args []string) error {
	var s topicsSettings
	err := s.parse(cio, args, "Create the topics the deployment needs that do not exist, with their partitions, "+
		"replication factor and configs, and wait until each has a leader. Existing topics are left as they are: "+
		"drift is reported, never changed. Running it again creates nothing.", nil)
	if err != nil {
		return err
	}
	specs, err := s.specs()
	if err != nil {
		return err
	}
	return s.withAdmin(ctx, func(ctx context.Context, adm *kadm.Client) error {
		rep, err := topic.Apply(ctx, adm, specs)
		if rep != nil {
			printTopicsTable(cio.stdout, specs, rep, true)
			fmt.Fprintf(cio.stdout, "\napply: %d created, %d already existed, %d drifted (drift is reported, never changed)\n",
				len(rep.Created), len(rep.OK)+len(rep.Drift)+len(rep.Create)-len(rep.Created), len(rep.Drift))
		}
		return err
	})
}

// printTopicsTable prints one line per spec: its status, settings and
// source, and the differences of a drifted topic.
func printTopicsTable(w io.Writer, specs []topic.Spec, rep *topic.Report, applied bool) {
	status := map[string]string{}
	drift := map[string][]topic.Diff{}
	for _, s := range rep.OK {
		status[s.Name] = "ok"
	}
	for _, s := range rep.Create {
		if applied {
			status[s.Name] = "exists" // created concurrently by someone else
		} else {
			status[s.Name] = "create"
		}
	}
	for _, s := range rep.Created {
		status[s.Name] = "created"
	}
	for _, d := range rep.Drift {
		status[d.Spec.Name] = "drift"
		drift[d.Spec.Name] = d.Diffs
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tTOPIC\tPARTITIONS\tREPLICATION\tCONFIGS\tSOURCE")
	for _, s := range specs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", status[s.Name], s.Name,
			orBrokerDefault(int(s.Partitions)), orBrokerDefault(int(s.ReplicationFactor)), configList(s.Configs), s.Source)
	}
	_ = tw.Flush()
	for _, s := range specs {
		for _, d := range drift[s.Name] {
			fmt.Fprintf(w, "drift: %s: %s\n", s.Name, d)
		}
	}
}

func orBrokerDefault(n int) string {
	if n < 0 {
		return "default"
	}
	return strconv.Itoa(n)
}

func configList(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// topicsSplit returns the non-empty items of a comma-separated list.
func topicsSplit(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
