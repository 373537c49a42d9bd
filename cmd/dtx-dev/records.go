package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// runRecords reads the records of topics written since --since and counts
// those that lack --header; it fails when any does.
func runRecords(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dtx-dev records", "dtx-dev records --topics T1,T2 --since TIME --header NAME [--brokers ...]", stderr)
	brokersFlag := fs.String("brokers", os.Getenv("DTX_KAFKA_BROKERS"), "comma-separated `host:port` list of seed brokers (default $DTX_KAFKA_BROKERS)")
	topicsFlag := fs.String("topics", "", "comma-separated `topics` to read (required); one that does not exist is reported and skipped")
	sinceFlag := fs.String("since", "", "RFC 3339 `time`: count only records whose timestamp is not before it (required)")
	header := fs.String("header", "", "`name` of the header every record must carry (required)")
	timeout := fs.Duration("timeout", 60*time.Second, "how long reading may take")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	brokers, topics := splitCSV(*brokersFlag), splitCSV(*topicsFlag)
	since, err := time.Parse(time.RFC3339Nano, *sinceFlag)
	switch {
	case len(brokers) == 0, len(topics) == 0, *header == "":
		fmt.Fprint(stderr, "dtx-dev records: --brokers (or DTX_KAFKA_BROKERS), --topics, --since and --header are required\n")
		fs.Usage()
		return errUsage
	case err != nil:
		fmt.Fprintf(stderr, "dtx-dev records: --since: %v\n", err)
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("dtx-dev-records"))
	if err != nil {
		return fmt.Errorf("kafka client for %s: %w", strings.Join(brokers, ","), err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("kafka at %s: end offsets: %w", strings.Join(brokers, ","), err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("kafka at %s: start offsets: %w", strings.Join(brokers, ","), err)
	}
	type count struct{ records, missing int }
	counts := map[string]*count{}
	from := map[string]map[int32]kgo.Offset{}
	left := map[string]map[int32]int64{} // end offset still to reach
	var absent []string
	for _, t := range topics {
		counts[t] = &count{}
		ends.Each(func(o kadm.ListedOffset) {
			if o.Topic != t || o.Err != nil {
				return
			}
			start, _ := starts.Lookup(t, o.Partition)
			if o.Offset <= start.Offset {
				return
			}
			if from[t] == nil {
				from[t], left[t] = map[int32]kgo.Offset{}, map[int32]int64{}
			}
			from[t][o.Partition] = kgo.NewOffset().At(start.Offset)
			left[t][o.Partition] = o.Offset
		})
		parts, ok := ends[t]
		for _, o := range parts {
			ok = ok && o.Err == nil
		}
		if !ok {
			absent = append(absent, t)
		}
	}
	if len(from) > 0 {
		cl.AddConsumePartitions(from)
	}
	for len(left) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading %v: %w", slices.Collect(maps.Keys(left)), err)
		}
		fetches.EachError(func(t string, p int32, err error) {
			fmt.Fprintf(stderr, "dtx-dev records: %s[%d]: %v\n", t, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			if !r.Timestamp.Before(since) {
				c := counts[r.Topic]
				c.records++
				if !slices.ContainsFunc(r.Headers, func(h kgo.RecordHeader) bool { return h.Key == *header && len(h.Value) > 0 }) {
					c.missing++
				}
			}
			if parts := left[r.Topic]; parts != nil && r.Offset+1 >= parts[r.Partition] {
				delete(parts, r.Partition)
				if len(parts) == 0 {
					delete(left, r.Topic)
				}
			}
		})
	}

	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "topic\trecords since %s\twithout %s\n", since.Format(time.RFC3339), *header)
	total, missing := 0, 0
	for _, t := range topics {
		if slices.Contains(absent, t) {
			fmt.Fprintf(tw, "%s\t(no such topic)\t\n", t)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\n", t, counts[t].records, counts[t].missing)
		total += counts[t].records
		missing += counts[t].missing
	}
	_ = tw.Flush()
	if missing > 0 {
		return fmt.Errorf("%d of %d records lack header %s", missing, total, *header)
	}
	fmt.Fprintf(stdout, "all %d records carry %s\n", total, *header)
	return nil
}

func splitCSV(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
