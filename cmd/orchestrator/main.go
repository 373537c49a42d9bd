package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/internal/service"
	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/messaging/middleware"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
	"github.com/vextrus/dtx/pkg/topic"
)

const summary = `orchestrator runs dtx sagas. A saga starts when one of the trigger events named in
its definition's triggers (a topic and a message type) arrives, usually written by a
service to its outbox; dtxctl saga start publishes a trigger by hand. Participants'
replies arrive on the reply topic (<prefix>dtx.saga.replies, or --reply-topic) and
lifecycle events go to <prefix>dtx.saga.events (or --event-topic). Per batch of
messages it commits the sagas' new state, the next commands and lifecycle events
(through the outbox: the outbox-relay publishes them) and the messages' deduplication
records in one PostgreSQL transaction. A scheduler fires step timeouts, retries and
saga deadlines by the database's clock; several replicas may run at once. Saga
definitions are YAML files (--definitions). Until every topic it uses exists (the
definitions' topics, the reply and event topics, the .dlq of each topic it consumes),
/readyz answers 503 ("topic X is missing: run dtxctl topics apply"); --create-topics
creates the missing ones at start instead (for development).

Triggers, commands, replies and lifecycle events are validated against dtx's built-in
schemas and the service's own, given with --schemas DIR (repeatable). Definitions naming
a type without a schema stop it at start (exit 2); a message of a type without a
schema goes to <topic>.dlq, logged as a warning and counted by dtx_dead_letters_total.
--topic-prefix starts the built-in names (reply and event topics, consumer group) so
that several deployments can share one cluster.

The operator API (list and show sagas, retry, abort or compensate one; GET and POST
under /sagas) is off unless --operator-addr is set; it is never served on the admin
address, whose /metrics, /healthz and /readyz need no credential. With
--operator-token-file, every request needs "Authorization: Bearer <token>" of a token
in the file (one a line, "name:token" to record the name as who operated; the file is
read again when it changes, so tokens are added and revoked without a restart). Without a
token file it is read-only and only a loopback address is accepted (127.0.0.1:8084);
any other address without a token file stops it at start (exit 2). Operations take a
JSON body {"reason": "...", "by": "..."}; the saga's timeline records who and why.`

// settings are the orchestrator's own flags.
type settings struct {
	definitions  string
	group        string
	replyTopic   string
	eventTopic   string
	maxBatch     int
	batchWindow  time.Duration
	workers      int
	scanInterval time.Duration
	inFlight     int
	session      time.Duration
	operatorAddr string
	tokenFile    string
	retention    string // --finished-retention: a duration or "off"

	// finishedRetention and keepFinished are --finished-retention parsed by
	// validate.
	finishedRetention time.Duration
	keepFinished      bool

	// operatorAuth is the operator API's authenticator, built by validate
	// when operatorAddr is set.
	operatorAuth orchestrator.Authenticator

	defs     []*saga.Definition // loaded by contracts
	registry *saga.Registry
}

func (st *settings) flags(s *service.Settings) {
	fs := s.FlagSet()
	fs.StringVar(&st.definitions, "definitions", "",
		"directory of saga definitions (*.yaml, *.yml); every version in-flight sagas use must be there (required)")
	fs.StringVar(&st.group, "group", "",
		"Kafka consumer group and inbox consumer name; replicas share it (empty: --topic-prefix then "+saga.DefaultOrchestratorGroup+")")
	fs.StringVar(&st.replyTopic, "reply-topic", "",
		"topic participants reply to, named in every command (empty: --topic-prefix then "+saga.DefaultReplyTopic+")")
	fs.StringVar(&st.eventTopic, "event-topic", "",
		"topic of saga lifecycle events (empty: --topic-prefix then "+saga.DefaultEventTopic+")")
	fs.IntVar(&st.maxBatch, "max-batch", orchestrator.DefaultMaxBatch,
		fmt.Sprintf("most messages handled in one transaction (1..%d)", orchestrator.MaxMaxBatch))
	fs.DurationVar(&st.batchWindow, "batch-window", orchestrator.DefaultBatchWindow,
		"how long a batch waits for more messages after its first (0..1s)")
	fs.IntVar(&st.workers, "workers", orchestrator.DefaultWorkers,
		fmt.Sprintf("batches in flight at once (1..%d)", orchestrator.MaxWorkers))
	fs.DurationVar(&st.scanInterval, "scan-interval", orchestrator.DefaultScanInterval,
		"how often the scheduler looks for due sagas (10ms..1m)")
	fs.DurationVar(&st.session, "session-timeout", 45*time.Second,
		"Kafka consumer group session timeout: how long a replica that died without leaving holds its partitions (6s..5m, within the broker's group.min/max.session.timeout.ms)")
	fs.StringVar(&st.operatorAddr, "operator-addr", "",
		"[host]:port of the operator API (/sagas); empty: off. Without --operator-token-file it must be a loopback address (e.g. 127.0.0.1:8084) and the API is read-only")
	fs.StringVar(&st.tokenFile, "operator-token-file", "",
		"file of the operator API's bearer tokens, one a line, \"name:token\" to record the name as who operated (tokens of 16 bytes or more; # comments)")
	fs.StringVar(&st.retention, "finished-retention", orchestrator.DefaultFinishedRetention.String(),
		fmt.Sprintf("how long a finished saga (completed, compensated, failed) is kept after its last update; then it is deleted with its timeline "+
			"(running and compensating sagas never are). At least %s, the inbox's retention; \"off\" keeps finished sagas forever (0 and negative values are refused)",
			orchestrator.DefaultInboxRetention))
	fs.IntVar(&st.inFlight, "in-flight-per-partition", 64,
		"messages of one partition handled at once, so that one transaction takes many (1..10000); a saga's own messages are serialised by its lock")
}

func (st *settings) validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s (%s): %s", flag, service.EnvName(flag), fmt.Sprintf(format, args...)))
	}
	if st.definitions == "" {
		bad("definitions", "required: a directory of saga definitions")
	}
	if st.maxBatch < 1 || st.maxBatch > orchestrator.MaxMaxBatch {
		bad("max-batch", "%d is outside 1..%d", st.maxBatch, orchestrator.MaxMaxBatch)
	}
	if st.batchWindow < 0 || st.batchWindow > orchestrator.MaxBatchWindow {
		bad("batch-window", "%s is outside 0..%s", st.batchWindow, orchestrator.MaxBatchWindow)
	}
	if st.workers < 1 || st.workers > orchestrator.MaxWorkers {
		bad("workers", "%d is outside 1..%d", st.workers, orchestrator.MaxWorkers)
	}
	if st.scanInterval < orchestrator.MinScanInterval || st.scanInterval > orchestrator.MaxScanInterval {
		bad("scan-interval", "%s is outside %s..%s", st.scanInterval, orchestrator.MinScanInterval, orchestrator.MaxScanInterval)
	}
	if st.inFlight < 1 || st.inFlight > 10000 {
		bad("in-flight-per-partition", "%d is outside 1..10000", st.inFlight)
	}
	if st.session < 6*time.Second || st.session > 5*time.Minute {
		bad("session-timeout", "%s is outside 6s..5m", st.session)
	}
	if err := st.parseRetention(); err != nil {
		bad("finished-retention", "%v", err)
	}
	if err := st.operator(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// parseRetention reads --finished-retention: a duration of at least the
// inbox's retention, or "off".
func (st *settings) parseRetention() error {
	if strings.EqualFold(strings.TrimSpace(st.retention), "off") {
		st.finishedRetention, st.keepFinished = 0, true
		return nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(st.retention))
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a duration (such as 720h) nor \"off\"", st.retention)
	case d <= 0:
		return fmt.Errorf("%s is not positive: \"off\" keeps finished sagas forever", d)
	case d < orchestrator.DefaultInboxRetention:
		return fmt.Errorf("%s is shorter than the inbox's retention (%s): a redelivered trigger could start a pruned saga again", d, orchestrator.DefaultInboxRetention)
	}
	st.finishedRetention, st.keepFinished = d, false
	return nil
}

// operator checks the operator API's settings and builds its authenticator:
// tokens from the token file, else read-only access from this host, which
// only a loopback address may serve.
func (st *settings) operator() error {
	addrFlag := fmt.Sprintf("operator-addr (%s)", service.EnvName("operator-addr"))
	fileFlag := fmt.Sprintf("operator-token-file (%s)", service.EnvName("operator-token-file"))
	if st.operatorAddr == "" {
		if st.tokenFile != "" {
			return fmt.Errorf("%s is set but %s is empty: the operator API is off; give it an address", fileFlag, addrFlag)
		}
		return nil
	}
	host, _, err := net.SplitHostPort(st.operatorAddr)
	if err != nil {
		return fmt.Errorf("%s: %q is not [host]:port", addrFlag, st.operatorAddr)
	}
	if st.tokenFile == "" {
		if !orchestrator.IsLoopback(host) {
			return fmt.Errorf("%s: %q is not a loopback address, and %s is not set: "+
				"serving the operator API beyond this host needs tokens (or listen on 127.0.0.1)", addrFlag, st.operatorAddr, fileFlag)
		}
		st.operatorAuth = orchestrator.LoopbackReadOnly()
		return nil
	}
	// Checked here, at start (exit 2 on a bad file); serveOperator
	// follows the file from then on.
	if _, err := orchestrator.NewTokenFileAuthenticator(st.tokenFile, nil); err != nil {
		return fmt.Errorf("%s: %w", fileFlag, err)
	}
	return nil
}

// serveOperator serves the operator API on --operator-addr until ctx is
// done; the returned function waits for it to stop. It serves nothing
// when the API is off.
func (st *settings) serveOperator(ctx context.Context, env *service.Env, o *orchestrator.Orchestrator) (wait func() error, err error) {
	if st.operatorAddr == "" {
		env.Logger.InfoContext(ctx, "operator API off: set --operator-addr (DTX_OPERATOR_ADDR) to serve it")
		return func() error { return nil }, nil
	}
	auth := st.operatorAuth
	if st.tokenFile != "" {
		if auth, err = orchestrator.NewTokenFileAuthenticator(st.tokenFile, env.Logger); err != nil {
			return nil, fmt.Errorf("operator-token-file (%s): %w", service.EnvName("operator-token-file"), err)
		}
	}
	api, err := o.HTTPHandler(orchestrator.HTTPConfig{Authenticator: auth})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", st.operatorAddr)
	if err != nil {
		return nil, fmt.Errorf("operator-addr (%s) %s: %w", service.EnvName("operator-addr"), st.operatorAddr, err)
	}
	access := "bearer tokens of " + st.tokenFile
	if st.tokenFile == "" {
		access = "read-only from this host, no token file"
	}
	env.Logger.InfoContext(ctx, "operator API listening", "addr", ln.Addr().String(), "access", access)
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	served := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if !errors.Is(err, http.ErrServerClosed) {
			env.Logger.ErrorContext(ctx, "operator API stopped serving", "err", err)
		}
		served <- err
	}()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	return func() error {
		<-stopped
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("operator API: %w", err)
		}
		return nil
	}, nil
}

// contracts loads the definitions and checks that the schemas hold every
// message type they name, so that a missing --schemas stops the binary at
// start instead of dead-lettering its first trigger.
func (st *settings) contracts(schemas *messaging.SchemaRegistry) error {
	defs, err := saga.LoadDir(st.definitions)
	if err != nil {
		return fmt.Errorf("definitions (%s): %w", service.EnvName("definitions"), err)
	}
	registry, err := saga.NewRegistry(defs...)
	if err != nil {
		return fmt.Errorf("definitions (%s): %w", service.EnvName("definitions"), err)
	}
	if err := orchestrator.CheckSchemas(registry, schemas); err != nil {
		return fmt.Errorf("schemas (%s): %w: give the directory of their JSON Schemas with --schemas", service.EnvName("schemas"), err)
	}
	st.defs, st.registry = defs, registry
	return nil
}

func (st *settings) run(ctx context.Context, env *service.Env) error {
	defs, registry := st.defs, st.registry
	// An explicit --group, --reply-topic or --event-topic wins over the
	// deployment's built-in name.
	names := env.Config.Names()
	st.group = cmp.Or(st.group, names.OrchestratorGroup)
	st.replyTopic = cmp.Or(st.replyTopic, names.Replies)
	st.eventTopic = cmp.Or(st.eventTopic, names.Events)
	schemaReg := env.Schemas
	o, err := orchestrator.New(env.Pool, orchestrator.Config{
		Schema:       env.Config.Schema,
		Definitions:  registry,
		Schemas:      schemaReg,
		Consumer:     st.group,
		ReplyTopic:   st.replyTopic,
		EventTopic:   st.eventTopic,
		MaxBatch:     st.maxBatch,
		BatchWindow:  st.batchWindow,
		Workers:      st.workers,
		ScanInterval: st.scanInterval,
		Logger:       env.Logger,
		Registerer:   env.Registry,

		FinishedRetention: st.finishedRetention,
		DisablePruning:    st.keepFinished,
	})
	if err != nil {
		return err
	}
	// The operator API has its own listener and credentials: the admin
	// address, which Prometheus and probes reach, never serves it.
	operatorCtx, stopOperator := context.WithCancel(ctx)
	defer stopOperator()
	waitOperator, err := st.serveOperator(operatorCtx, env, o)
	if err != nil {
		return err
	}
	defer func() {
		stopOperator()
		if err := waitOperator(); err != nil {
			env.Logger.Warn("orchestrator: operator API", "err", err)
		}
	}()

	wlog := watermill.NewSlogLogger(env.Logger)
	client := kafka.ClientConfig{Brokers: env.Config.KafkaBrokers, ClientID: "dtx-orchestrator", Logger: wlog, Opts: env.Config.KafkaOpts()}
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{ClientConfig: client})
	client.Opts = append(client.Opts, kgo.SessionTimeout(st.session), kgo.HeartbeatInterval(min(3*time.Second, st.session/3)))
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		ClientConfig:            client,
		ConsumerGroup:           st.group,
		MaxInFlightPerPartition: st.inFlight,
		ReadAheadPerPartition:   max(st.inFlight*2, 256),
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Close() }()
	mws, err := middleware.Standard(middleware.StackConfig{
		DeadLetterPublisher: pub, Schemas: schemaReg, Logger: env.Logger, Registerer: env.Registry,
	})
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return err
	}
	router.AddMiddleware(mws...)
	topics := o.Topics()
	for _, topic := range topics {
		router.AddConsumerHandler("saga:"+topic, topic, sub, o.Handle)
	}
	env.Logger.InfoContext(ctx, "orchestrator: running", "definitions", len(defs), "topics", topics,
		"group", st.group, "reply_topic", st.replyTopic, "event_topic", st.eventTopic, "max_batch", st.maxBatch, "workers", st.workers)

	// Until every topic it reads or writes exists, the orchestrator is not
	// ready and does not start.
	if err := env.RequireTopics(ctx, topic.ForSagas(registry, topic.SagaParams{
		Prefix: env.Config.TopicPrefix, ReplyTopic: st.replyTopic, EventTopic: st.eventTopic,
	}).All()); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	// The workers and the scheduler outlive the router: its handlers in
	// flight wait for their batch while it drains.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = o.Run(runCtx) })
	routerErr := messaging.RunRouter(ctx, router)
	cancel()
	wg.Wait()
	if routerErr != nil {
		if ctx.Err() == nil {
			return fmt.Errorf("orchestrator: %w", routerErr)
		}
		env.Logger.WarnContext(ctx, "orchestrator: drain", "err", routerErr)
	}
	env.Logger.InfoContext(ctx, "orchestrator: stopped")
	return runErr
}

func main() {
	var st settings
	service.Main(service.App{
		Name:             "orchestrator",
		Summary:          summary,
		DefaultAdminAddr: ":8081",
		FlagsFunc:        st.flags,
		ValidateFunc:     st.validate,
		ContractsFunc:    st.contracts,
		RunFunc:          st.run,
		ReadyChecksFunc:  func() []string { return []string{service.TopicsCheck} },
	})
}
