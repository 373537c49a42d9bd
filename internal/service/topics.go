package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/vextrus/dtx/internal/wait"
	"github.com/vextrus/dtx/pkg/topic"
)

// TopicsCheck is the name of the readiness check RequireTopics adds; list
// it in App.ReadyChecksFunc.
const TopicsCheck = "topics"

// MissingTopicsMsg is the message of the warning RequireTopics logs while a
// topic is missing; its attribute "missing" lists them.
const MissingTopicsMsg = "topics missing: not ready until they exist: run dtxctl topics apply"

// missingTopicWarnEvery bounds how often RequireTopics repeats its warning
// about a missing topic.
const missingTopicWarnEvery = 30 * time.Second

// RequireTopics makes the process not ready while any of names is missing
// on the cluster: it adds the readiness check TopicsCheck, whose error reads
// "topic X is missing: run dtxctl topics apply". With --create-topics it
// first creates the missing ones (with --topic-partitions and
// --topic-replication-factor; an existing topic is left as it is). It then
// waits until every topic exists, logging a warning that names the missing
// ones at once and every 30s while they stay missing, and returns nil, or
// ctx's error if ctx ends first. The check stays: a topic deleted later
// makes the process not ready again.
func (e *Env) RequireTopics(ctx context.Context, names []string) error {
	adm := kadm.NewClient(e.Kafka) // shares e.Kafka: never closed here
	e.AddReadyCheck(TopicsCheck, func(ctx context.Context) error { return topic.Require(ctx, adm, names) })
	if e.Config.CreateTopics {
		if err := e.createTopics(ctx, adm, names); err != nil {
			return err
		}
	}
	var lastWarn time.Time
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, e.Config.ReadyTimeout)
		err := topic.Require(cctx, adm, names)
		cancel()
		if err == nil {
			e.Logger.InfoContext(ctx, "topics: all exist", "topics", len(names))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var missing *topic.MissingError
		switch {
		case !errors.As(err, &missing):
			e.Logger.DebugContext(ctx, "topics: cannot check yet", "err", err)
		case time.Since(lastWarn) >= missingTopicWarnEvery:
			lastWarn = time.Now()
			e.Logger.WarnContext(ctx, MissingTopicsMsg, "missing", missing.Topics, "err", missing.Error())
		}
		if !wait.Sleep(ctx, wait.Backoff(250*time.Millisecond, 2*time.Second, attempt)) {
			return ctx.Err()
		}
	}
}

// createTopics creates what is missing of names, retrying while the cluster
// does not answer.
func (e *Env) createTopics(ctx context.Context, adm *kadm.Client, names []string) error {
	specs := topic.Defaults{
		Partitions:        int32(e.Config.TopicPartitions),
		ReplicationFactor: int16(e.Config.TopicReplicationFactor),
	}.Apply(topic.FromNames("--create-topics", names...))
	for attempt := 1; ; attempt++ {
		rep, err := topic.Apply(ctx, adm, specs)
		if err == nil {
			if len(rep.Created) > 0 {
				e.Logger.InfoContext(ctx, "topics: created (--create-topics)", "topics", topic.Names(rep.Created),
					"partitions", e.Config.TopicPartitions, "replication_factor", e.Config.TopicReplicationFactor)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt == 1 || attempt%10 == 0 {
			e.Logger.WarnContext(ctx, "topics: cannot create the missing topics (--create-topics); retrying", "err", err)
		}
		if !wait.Sleep(ctx, wait.Backoff(500*time.Millisecond, 5*time.Second, attempt)) {
			return fmt.Errorf("create-topics (DTX_CREATE_TOPICS): %w", ctx.Err())
		}
	}
}
