package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/kafka"
	"github.com/vextrus/dtx/pkg/saga"
	"github.com/vextrus/dtx/pkg/saga/orchestrator"
	"github.com/vextrus/dtx/pkg/topic"
	"github.com/vextrus/dtx/schemas"
)

func sagaCommands() *command {
	return &command{
		name:    "saga",
		summary: "Start, list and inspect sagas, and retry, abort or compensate one.",
		sub: []*command{
			{name: "start", summary: "Start a saga: publish its definition's trigger event to Kafka.", run: runSagaStart},
			{name: "list", summary: "List sagas, most recently updated first (--status, --definition, --limit).", run: runSagaList},
			{name: "show", summary: "Show one saga: its state, what it waits for, and its timeline.", run: runSagaShow},
			{name: "retry", summary: "Re-send a saga's current command now, or resume the compensation of a parked saga.", run: operation(orchestrator.OpRetry)},
			{name: "abort", summary: "Stop a saga as failed, without compensating.", run: operation(orchestrator.OpAbort)},
			{name: "compensate", summary: "Compensate a running saga now, or resume the compensation of a parked one.", run: operation(orchestrator.OpCompensate)},
		},
	}
}

// sagaID takes the saga id from the front of args (before the flags).
func sagaID(cio *cmdIO, args []string) (string, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		for _, a := range args {
			if a == "-h" || a == "-help" || a == "--help" {
				return "", args, nil
			}
		}
		fmt.Fprintf(cio.stderr, "%s: the saga id is missing: %s <saga-id> [flags]\n", cio.path, cio.path)
		return "", nil, errUsage
	}
	return args[0], args[1:], nil
}

func runSagaList(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		db         dbSettings
		api        operatorSettings
		status     string
		definition string
		limit      int
		asJSON     bool
	)
	f := newFlags(cio, "List sagas, most recently updated first, from the database or, with --operator-url,\n"+
		"from the orchestrator's operator API. It changes nothing.", "[flags]")
	f.fs.StringVar(&status, "status", "", "keep sagas in this `STATUS` (running, compensating, completed, compensated, failed)")
	f.fs.StringVar(&definition, "definition", "", "keep sagas of this definition `NAME`")
	f.fs.IntVar(&limit, "limit", 50, "show at most `N` sagas (1..1000)")
	f.fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	db.register(f)
	api.register(f)
	if err := f.parse(cio, args); err != nil {
		return err
	}
	if status != "" && !saga.Status(status).Valid() {
		fmt.Fprintf(cio.stderr, "%s: --status %q is not a saga status\n", cio.path, status)
		return errUsage
	}
	if limit < 1 || limit > 1000 {
		fmt.Fprintf(cio.stderr, "%s: --limit %d is outside 1..1000\n", cio.path, limit)
		return errUsage
	}
	output := func(list []orchestrator.Summary) error {
		if asJSON {
			return printJSON(cio.stdout, list)
		}
		w := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tDEFINITION\tSTATUS\tSTEP\tATTEMPT\tUPDATED\tREASON")
		for _, s := range list {
			fmt.Fprintf(w, "%s\t%s@%d\t%s\t%s\t%d\t%s\t%s\n", s.ID, s.Definition, s.DefinitionVersion, s.Status,
				dash(s.Step), s.Attempt, s.UpdatedAt.UTC().Format(time.RFC3339), s.Reason)
		}
		return w.Flush()
	}
	if api.on() {
		c, err := api.client()
		if err != nil {
			return err
		}
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if status != "" {
			q.Set("status", status)
		}
		if definition != "" {
			q.Set("definition", definition)
		}
		var list []orchestrator.Summary
		if err := c.do(ctx, http.MethodGet, "?"+q.Encode(), nil, &list); err != nil {
			return err
		}
		return output(list)
	}
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		list, err := orchestrator.List(ctx, conn, db.schema, orchestrator.ListParams{
			Status: saga.Status(status), Definition: definition, Limit: limit,
		})
		if err != nil {
			return err
		}
		return output(list)
	})
}

func runSagaShow(ctx context.Context, cio *cmdIO, args []string) error {
	id, args, err := sagaID(cio, args)
	if err != nil {
		return err
	}
	var (
		db          dbSettings
		api         operatorSettings
		definitions string
		asJSON      bool
	)
	f := newFlags(cio, "Show one saga: its status, what it waits for now, its data and its timeline\n"+
		"(each step's attempts, with time, outcome and error; operators' entries with who\n"+
		"and why), from the database or, with --operator-url, from the orchestrator's\n"+
		"operator API. It changes nothing.", "<saga-id> [flags]")
	f.fs.StringVar(&definitions, "definitions", "", "`DIR` of saga definitions, to name the step a saga waits for (optional; not used with --operator-url)")
	f.env("definitions", "DTX_DEFINITIONS", false)
	f.fs.BoolVar(&asJSON, "json", false, "print JSON instead of text")
	db.register(f)
	api.register(f)
	if err := f.parse(cio, args); err != nil {
		return err
	}
	output := func(d orchestrator.Detail) error {
		if asJSON {
			return printJSON(cio.stdout, d)
		}
		printDetail(cio.stdout, d)
		return nil
	}
	if api.on() {
		c, err := api.client()
		if err != nil {
			return err
		}
		var d orchestrator.Detail
		if err := c.do(ctx, http.MethodGet, "/"+url.PathEscape(id), nil, &d); err != nil {
			return err
		}
		return output(d)
	}
	var reg *saga.Registry
	if definitions != "" {
		if reg, err = loadDefinitions(definitions); err != nil {
			return err
		}
	}
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		d, err := orchestrator.Show(ctx, conn, db.schema, reg, id)
		if err != nil {
			return err
		}
		return output(d)
	})
}

func printDetail(out io.Writer, d orchestrator.Detail) {
	fmt.Fprintf(out, "saga        %s\n", d.ID)
	fmt.Fprintf(out, "definition  %s@%d\n", d.Definition, d.DefinitionVersion)
	fmt.Fprintf(out, "status      %s\n", d.Status)
	if d.Reason != "" {
		fmt.Fprintf(out, "reason      %s\n", d.Reason)
	}
	fmt.Fprintf(out, "correlation %s\n", d.CorrelationID)
	fmt.Fprintf(out, "started     %s\n", d.StartedAt.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(out, "updated     %s (revision %d)\n", d.UpdatedAt.UTC().Format(time.RFC3339Nano), d.Revision)
	fmt.Fprintf(out, "waiting for %s\n", d.Waiting)
	if data, err := json.Marshal(d.State.Data); err == nil {
		fmt.Fprintf(out, "data        %s\n", data)
	}
	fmt.Fprintln(out, "\ntimeline:")
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tSTEP\tPHASE\tATTEMPT\tOUTCOME\tREPLY\tBY\tDETAIL")
	for _, e := range d.Timeline {
		attempt := "-"
		if e.Attempt > 0 {
			attempt = fmt.Sprint(e.Attempt)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.At.UTC().Format("15:04:05.000"), dash(e.Step), dash(e.Phase),
			attempt, e.Outcome, dash(e.ReplyType), dash(e.Actor), e.Detail)
	}
	_ = w.Flush()
}

// operation returns the run function of retry, abort or compensate.
func operation(op orchestrator.Operation) func(ctx context.Context, cio *cmdIO, args []string) error {
	return func(ctx context.Context, cio *cmdIO, args []string) error {
		id, args, err := sagaID(cio, args)
		if err != nil {
			return err
		}
		var (
			db          dbSettings
			api         operatorSettings
			definitions string
			reason      string
			by          string
			prefix      string
			replyTopic  string
			eventTopic  string
			schemaDirs  stringList
		)
		defaultBy := "dtxctl"
		if u, ok := cio.env("USER"); ok && u != "" {
			defaultBy = u
		}
		f := newFlags(cio, fmt.Sprintf("Apply %q to one saga. With --operator-url, through the orchestrator's operator\n"+
			"API (with the token of --operator-token-file); else in one transaction of its own\n"+
			"through the orchestrator's transition path (the saga is locked, commands go\n"+
			"through the outbox), which needs the saga's definition version (--definitions).\n"+
			"Either way the timeline records who (--by, or the token's name) and why (--reason).", op), "<saga-id> --reason TEXT [flags]")
		f.fs.StringVar(&reason, "reason", "", "why, for the saga's timeline (required)")
		f.fs.StringVar(&by, "by", defaultBy, "who operates, for the saga's timeline (the operator API records a named token's name first)")
		f.fs.StringVar(&definitions, "definitions", "", "`DIR` of saga definitions (required without --operator-url): the orchestrator's")
		f.env("definitions", "DTX_DEFINITIONS", false)
		// The commands and events an operation writes name the orchestrator's
		// reply and event topics: they must be the running orchestrator's.
		f.fs.StringVar(&prefix, "topic-prefix", "", "`PREFIX` of the built-in topic names, as given to the orchestrator")
		f.env("topic-prefix", "DTX_TOPIC_PREFIX", false)
		f.fs.StringVar(&replyTopic, "reply-topic", "", "the orchestrator's reply `TOPIC` (default: the prefix, then "+saga.DefaultReplyTopic+")")
		f.env("reply-topic", "DTX_REPLY_TOPIC", false)
		f.fs.StringVar(&eventTopic, "event-topic", "", "the orchestrator's lifecycle event `TOPIC` (default: the prefix, then "+saga.DefaultEventTopic+")")
		f.env("event-topic", "DTX_EVENT_TOPIC", false)
		f.fs.Var(&schemaDirs, "schemas", "`DIR` of JSON Schemas besides dtx's own, to validate the commands written; repeatable, or comma-separated")
		f.env("schemas", "DTX_SCHEMAS", false)
		db.register(f)
		api.register(f)
		if err := f.parse(cio, args); err != nil {
			return err
		}
		reason, by = strings.TrimSpace(reason), strings.TrimSpace(by)
		if reason == "" {
			fmt.Fprintf(cio.stderr, "%s: --reason is required: say why, for the saga's timeline\n", cio.path)
			return errUsage
		}
		if len(reason) > orchestrator.MaxReasonLength {
			fmt.Fprintf(cio.stderr, "%s: --reason has %d bytes, at most %d\n", cio.path, len(reason), orchestrator.MaxReasonLength)
			return errUsage
		}
		var st saga.State
		if api.on() {
			c, err := api.client()
			if err != nil {
				return err
			}
			body := orchestrator.OperationRequest{Reason: reason, By: by}
			if err := c.do(ctx, http.MethodPost, "/"+url.PathEscape(id)+"/"+string(op), body, &st); err != nil {
				return err
			}
		} else {
			if st, err = operateInDatabase(ctx, cio, db, definitions, schemaDirs, prefix, replyTopic, eventTopic,
				id, op, orchestrator.OperateParams{Reason: reason, Actor: by}); err != nil {
				return err
			}
		}
		fmt.Fprintf(cio.stdout, "saga %s: %s, now %s", id, op, st.Status)
		if st.Reason != "" {
			fmt.Fprintf(cio.stdout, " (%s)", st.Reason)
		}
		fmt.Fprintln(cio.stdout)
		return nil
	}
}

// operateInDatabase applies op to saga id with an orchestrator of its own
// on the database.
func operateInDatabase(ctx context.Context, cio *cmdIO, db dbSettings, definitions string, schemaDirs []string,
	prefix, replyTopic, eventTopic, id string, op orchestrator.Operation, p orchestrator.OperateParams,
) (saga.State, error) {
	if definitions == "" {
		fmt.Fprintf(cio.stderr, "%s: --definitions (DTX_DEFINITIONS) is required without --operator-url (DTX_OPERATOR_URL)\n", cio.path)
		return saga.State{}, errUsage
	}
	reg, err := loadDefinitions(definitions)
	if err != nil {
		return saga.State{}, err
	}
	if err := db.validate(); err != nil {
		return saga.State{}, err
	}
	pool, err := db.pool(ctx)
	if err != nil {
		return saga.State{}, err
	}
	defer pool.Close()
	schemaReg, err := startSchemas(schemaDirs)
	if err != nil {
		return saga.State{}, err
	}
	names := saga.Names(prefix)
	o, err := orchestrator.New(pool, orchestrator.Config{
		Schema: db.schema, Definitions: reg, Schemas: schemaReg, Logger: logger(cio.stderr),
		ReplyTopic: cmp.Or(replyTopic, names.Replies), EventTopic: cmp.Or(eventTopic, names.Events),
	})
	if err != nil {
		return saga.State{}, err
	}
	return o.Operate(ctx, id, op, p)
}

// operatorSettings are the settings of the saga commands that may talk to
// the orchestrator's operator API instead of the database.
type operatorSettings struct {
	url       string
	tokenFile string
}

func (s *operatorSettings) register(f *flags) {
	f.fs.StringVar(&s.url, "operator-url", "", "base `URL` of the orchestrator's operator API (its --operator-addr, e.g. http://127.0.0.1:8084); "+
		"set, the command talks to it instead of the database")
	f.env("operator-url", "DTX_OPERATOR_URL", false)
	f.fs.StringVar(&s.tokenFile, "operator-token-file", "", "`FILE` holding the operator API's bearer token, as the orchestrator's token file "+
		"(its first token is sent; a name:token line sends the token)")
	f.env("operator-token-file", "DTX_OPERATOR_TOKEN_FILE", false)
}

func (s *operatorSettings) on() bool { return s.url != "" }

// operatorTimeout bounds one request to the operator API.
const operatorTimeout = 30 * time.Second

// client checks the settings and returns a client of the API.
func (s *operatorSettings) client() (*operatorClient, error) {
	u, err := url.Parse(s.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--operator-url (DTX_OPERATOR_URL) %q is not an http:// or https:// URL", s.url)
	}
	c := &operatorClient{base: strings.TrimSuffix(u.String(), "/") + orchestrator.DefaultHTTPPrefix, http: &http.Client{Timeout: operatorTimeout}}
	if s.tokenFile != "" {
		tokens, err := orchestrator.ReadTokenFile(s.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--operator-token-file (DTX_OPERATOR_TOKEN_FILE): %w", err)
		}
		c.token = tokens[0].Secret
	}
	return c, nil
}

// operatorClient talks to the orchestrator's operator API.
type operatorClient struct {
	base  string // the URL of the API's prefix
	token string
	http  *http.Client
}

// do sends a request to the API at base+path, with body as JSON when not
// nil, and decodes the answer into out.
func (c *operatorClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("--operator-url (DTX_OPERATOR_URL): %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("the operator API: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("the operator API at %s: read the answer: %w", c.base, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			if c.token == "" {
				return fmt.Errorf("the operator API at %s needs a token (401): give a file holding one of its tokens with --operator-token-file (DTX_OPERATOR_TOKEN_FILE)", c.base)
			}
			return fmt.Errorf("the operator API at %s refused the token of --operator-token-file (DTX_OPERATOR_TOKEN_FILE) (401): it is not one of the orchestrator's tokens", c.base)
		case http.StatusForbidden:
			return fmt.Errorf("the operator API at %s refused the operation (403): %s", c.base, msg)
		}
		return fmt.Errorf("%s (the operator API answered %d)", msg, resp.StatusCode)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("the operator API at %s: decode the answer: %w", c.base, err)
	}
	return nil
}

func loadDefinitions(dir string) (*saga.Registry, error) {
	defs, err := saga.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("--definitions (DTX_DEFINITIONS): %w", err)
	}
	reg, err := saga.NewRegistry(defs...)
	if err != nil {
		return nil, fmt.Errorf("--definitions (DTX_DEFINITIONS): %w", err)
	}
	return reg, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// runSagaStart publishes the trigger event of a saga definition to Kafka, so
// that the orchestrator running those definitions starts a saga.
func runSagaStart(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		definitions string
		schemaDirs  stringList
		brokers     string
		data        string
		dataFile    string
		version     int
		triggerType string
		messageID   string
		source      string
		timeout     time.Duration
		asJSON      bool
		sec         kafkaSecurity
	)
	f := newFlags(cio, "Start a saga: build the trigger event of the saga's definition (its topic and type\n"+
		"from the definition's triggers), validate its payload against the JSON Schemas,\n"+
		"publish it to Kafka with an idempotent producer, and print its topic, message id\n"+
		"and the id the saga will have. The orchestrator running the same definitions\n"+
		"starts the saga; a saga id that exists already starts nothing.", "SAGA_NAME (--data JSON | --data-file FILE) [flags]")
	f.fs.StringVar(&definitions, "definitions", "", "`DIR` of saga definitions (required): the orchestrator's")
	f.env("definitions", "DTX_DEFINITIONS", false)
	f.fs.Var(&schemaDirs, "schemas", "`DIR` of JSON Schemas (<type>.v<version>.json) besides dtx's own; repeatable, or comma-separated")
	f.env("schemas", "DTX_SCHEMAS", false)
	f.fs.StringVar(&brokers, "kafka-brokers", "127.0.0.1:9092", "Kafka seed `BROKERS`, comma-separated host:port")
	f.env("kafka-brokers", "DTX_KAFKA_BROKERS", false)
	f.fs.StringVar(&data, "data", "", "the trigger's payload, a `JSON` object")
	f.fs.StringVar(&dataFile, "data-file", "", "`FILE` holding the trigger's payload, a JSON object")
	f.fs.IntVar(&version, "version", 0, "the definition version `N` expected to start; 0 means the latest (the orchestrator always starts the latest)")
	f.fs.StringVar(&triggerType, "trigger-type", "", "the trigger `TYPE` to publish, when the definition has several")
	f.fs.StringVar(&messageID, "message-id", "", "the message `ID` (ce_id); default a new UUID. Publishing the same id and payload again starts nothing new")
	f.fs.StringVar(&source, "source", "/dtxctl", "the message's CloudEvents source (ce_source), a `URI` reference")
	f.fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the broker's acknowledgement (`DURATION`)")
	f.fs.BoolVar(&asJSON, "json", false, "print JSON instead of text")
	sec.register(f)
	flagArgs, positional := splitPositional(f.fs, args)
	if err := f.parse(cio, flagArgs); err != nil {
		return err
	}
	if len(positional) != 1 {
		fmt.Fprintf(cio.stderr, "%s: want exactly one SAGA_NAME, got %d arguments: %s SAGA_NAME --data JSON [flags]\n", cio.path, len(positional), cio.path)
		return errUsage
	}
	name := positional[0]
	var problems []string
	if definitions == "" {
		problems = append(problems, "--definitions (DTX_DEFINITIONS) is required")
	}
	if (data == "") == (dataFile == "") {
		problems = append(problems, "give the payload with exactly one of --data and --data-file")
	}
	if version < 0 {
		problems = append(problems, fmt.Sprintf("--version %d is negative", version))
	}
	if timeout <= 0 {
		problems = append(problems, fmt.Sprintf("--timeout %s is not positive", timeout))
	}
	seeds := splitComma(brokers)
	if len(seeds) == 0 {
		problems = append(problems, "--kafka-brokers (DTX_KAFKA_BROKERS) names no broker")
	}
	if err := sec.load(cio.stderr, cio.path); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(cio.stderr, "%s: %s\n", cio.path, p)
		}
		return errUsage
	}

	reg, err := loadDefinitions(definitions)
	if err != nil {
		return err
	}
	ref, err := startTrigger(reg, name, version, triggerType)
	if err != nil {
		return err
	}
	payload := []byte(data)
	if dataFile != "" {
		if payload, err = os.ReadFile(dataFile); err != nil {
			return fmt.Errorf("--data-file: %w", err)
		}
	}
	schemaReg, err := startSchemas(schemaDirs)
	if err != nil {
		return err
	}
	trig, err := buildTrigger(ref, payload, messageID, source)
	if err != nil {
		return err
	}
	if err := schemaReg.ValidateEnvelope(trig.env); err != nil {
		if errors.Is(err, messaging.ErrUnknownType) {
			return fmt.Errorf("the trigger %s: %w: give the directory of your JSON Schemas with --schemas (DTX_SCHEMAS)", trig.env.Type, err)
		}
		return fmt.Errorf("the trigger %s does not follow its schema: %w", trig.env.Type, err)
	}
	if err := publishTrigger(ctx, &sec, seeds, timeout, ref.Trigger.Topic, trig.env); err != nil {
		return err
	}
	out := startResult{
		Saga: ref.Definition.Ref(), Topic: ref.Trigger.Topic, Type: trig.env.Type,
		MessageID: trig.env.ID, SagaID: trig.sagaID,
	}
	if asJSON {
		return printJSON(cio.stdout, out)
	}
	fmt.Fprintf(cio.stdout, "saga       %s\ntopic      %s\ntype       %s\nmessage id %s\nsaga id    %s\n",
		out.Saga, out.Topic, out.Type, out.MessageID, out.SagaID)
	return nil
}

// startResult is what `saga start` prints.
type startResult struct {
	Saga      string `json:"saga"`
	Topic     string `json:"topic"`
	Type      string `json:"type"`
	MessageID string `json:"message_id"`
	SagaID    string `json:"saga_id"`
}

// startTrigger picks the trigger of definition name that `saga start`
// publishes: the latest version's (which must be version, when not 0), of
// type triggerType when given, else its only one. It refuses a trigger that
// another definition's trigger of the same topic and type shadows: the
// orchestrator would start that other saga.
func startTrigger(reg *saga.Registry, name string, version int, triggerType string) (saga.TriggerRef, error) {
	def, ok := reg.Latest(name)
	if !ok {
		var names []string
		for _, d := range reg.Definitions() {
			if !slices.Contains(names, d.Name) {
				names = append(names, d.Name)
			}
		}
		return saga.TriggerRef{}, fmt.Errorf("no saga definition %q in --definitions (DTX_DEFINITIONS); it holds: %s", name, strings.Join(names, ", "))
	}
	if version != 0 && version != def.Version {
		return saga.TriggerRef{}, fmt.Errorf("--version %d: the latest version of %s is %d, and the orchestrator starts only the latest", version, name, def.Version)
	}
	var pick []saga.Trigger
	var types []string
	for _, t := range def.Triggers {
		types = append(types, t.Type)
		if triggerType == "" || t.Type == triggerType {
			pick = append(pick, t)
		}
	}
	switch {
	case len(def.Triggers) == 0:
		return saga.TriggerRef{}, fmt.Errorf("saga %s has no triggers: nothing published starts it", def.Ref())
	case len(pick) == 0:
		return saga.TriggerRef{}, fmt.Errorf("--trigger-type %q: saga %s has no such trigger; its triggers: %s", triggerType, def.Ref(), strings.Join(types, ", "))
	case len(pick) > 1:
		return saga.TriggerRef{}, fmt.Errorf("saga %s has %d triggers (%s): choose one with --trigger-type", def.Ref(), len(pick), strings.Join(types, ", "))
	}
	t := pick[0]
	for _, other := range reg.Triggers() {
		if other.Trigger.Topic == t.Topic && other.Trigger.Type == t.Type {
			if other.Definition != def {
				return saga.TriggerRef{}, fmt.Errorf("trigger %s on %s of saga %s would start saga %s, whose trigger of the same topic and type comes first",
					t.Type, t.Topic, def.Ref(), other.Definition.Ref())
			}
			break
		}
	}
	return saga.TriggerRef{Definition: def, Trigger: t}, nil
}

// trigger is a built trigger message and the id of the saga it starts.
type trigger struct {
	env    messaging.Envelope
	sagaID string
}

// buildTrigger builds the trigger message of ref with payload, keyed by the
// saga id it yields, as the orchestrator computes it.
func buildTrigger(ref saga.TriggerRef, payload []byte, messageID, source string) (trigger, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil || dec.More() {
		return trigger{}, fmt.Errorf("the payload (--data or --data-file) is not one JSON object")
	}
	env, err := messaging.NewEnvelope(ref.Trigger.Type, source, json.RawMessage(payload))
	if err != nil {
		return trigger{}, fmt.Errorf("--source: %w", err)
	}
	if messageID != "" {
		env.ID = messageID
	}
	id, err := ref.Trigger.SagaIDFrom(obj, env.ID)
	if err != nil {
		return trigger{}, fmt.Errorf("the saga id of %s (saga_id %q of its trigger) from the payload: %w", ref.Definition.Ref(), ref.Trigger.SagaID, err)
	}
	if len(id) > 255 {
		return trigger{}, fmt.Errorf("the saga id from the payload is %d bytes long: at most 255", len(id))
	}
	env.PartitionKey = id
	env.Subject = id
	if err := env.Validate(); err != nil {
		return trigger{}, fmt.Errorf("--message-id or --source: %w", err)
	}
	return trigger{env: env, sagaID: id}, nil
}

// publishTrigger publishes env to topic with the idempotent acks=all
// producer, once the topic is known to exist; sec secures the connections.
func publishTrigger(ctx context.Context, sec *kafkaSecurity, brokers []string, timeout time.Duration, topicName string, env messaging.Envelope) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl, err := kgo.NewClient(sec.clientOpts(brokers)...)
	if err != nil {
		return fmt.Errorf("--kafka-brokers (DTX_KAFKA_BROKERS): %w", err)
	}
	err = topic.Require(ctx, kadm.NewClient(cl), []string{topicName})
	cl.Close()
	if err != nil {
		return fmt.Errorf("check topic %s at %s: %w", topicName, strings.Join(brokers, ","), err)
	}
	pub, err := kafka.NewPublisher(kafka.PublisherConfig{
		ClientConfig:    kafka.ClientConfig{Brokers: brokers, ClientID: clientID, Opts: sec.opts},
		DeliveryTimeout: timeout,
	})
	if err != nil {
		return fmt.Errorf("--kafka-brokers (DTX_KAFKA_BROKERS): %w", err)
	}
	defer func() { _ = pub.Close() }()
	msg, err := env.ToMessage()
	if err != nil {
		return err
	}
	msg.SetContext(ctx)
	if err := pub.Publish(topicName, msg); err != nil {
		return fmt.Errorf("publish to %s at %s: %w", topicName, strings.Join(brokers, ","), err)
	}
	return nil
}

// splitPositional separates the flags of args (each with its value) from
// the arguments that are not flags, so that an argument may come between
// flags. Everything after "--" is positional.
func splitPositional(fs *flag.FlagSet, args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(positional, args[i+1:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		fl := fs.Lookup(name)
		if fl == nil {
			continue
		}
		if b, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, positional
}

// stringList is a repeatable flag whose values may also be comma-separated.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, splitComma(v)...)
	return nil
}

func splitComma(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// startSchemas returns dtx's own schemas merged with those of dirs.
func startSchemas(dirs []string) (*messaging.SchemaRegistry, error) {
	reg, err := messaging.NewSchemaRegistry(messaging.SchemaRegistryConfig{
		Sources: append([]messaging.SchemaSource{schemas.Source()}, messaging.SchemaDirs(dirs...)...),
	})
	if err != nil {
		return nil, fmt.Errorf("--schemas (DTX_SCHEMAS): %w", err)
	}
	return reg, nil
}
