package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vextrus/dtx/pkg/messaging"
	"github.com/vextrus/dtx/pkg/messaging/outbox"
)

func outboxCommands() *command {
	return &command{
		name:    "outbox",
		summary: "Inspect the outbox rows the broker refused, and requeue or delete them.",
		sub: []*command{
			{
				name:    "rejected",
				summary: "List, requeue or delete the rows the relay set aside in outbox_rejected.",
				sub: []*command{
					{name: "list", summary: "List rejected outbox rows, in their original order (--topic, --reason, --since).", run: runRejectedList},
					{name: "requeue", summary: "Move rejected rows back into the outbox, as new rows the relay publishes.", run: runRejectedRequeue},
					{name: "delete", summary: "Delete rejected rows for good (--yes).", run: runRejectedDelete},
				},
			},
		},
	}
}

const rejectedHelp = `The outbox relay moves a row the broker refuses for good (a record too large
for the topic, a record the broker finds corrupt, headers that are not a JSON object
of strings) to the table outbox_rejected, with the reason and the relay replica that
rejected it, so that the rows after it are published. A rejected row is named by its
id: its position in the outbox (the ID column of list).`

// rejectedFilter selects rejected rows.
type rejectedFilter struct {
	topic        string
	reason       string
	since, until timeFlag
	ids          []int64
}

func (r *rejectedFilter) register(f *flags) {
	r.since.now, r.until.now = time.Now, time.Now
	f.fs.StringVar(&r.topic, "topic", "", "keep rows of this `TOPIC`")
	f.fs.StringVar(&r.reason, "reason", "", "keep rows whose reason contains `TEXT` (case-insensitive)")
	f.fs.Var(&r.since, "since", "keep rows rejected at or after `TIME` (RFC 3339, or a duration such as 2h meaning that long ago)")
	f.fs.Var(&r.until, "until", "keep rows rejected before `TIME` (RFC 3339, or a duration meaning that long ago)")
}

// args returns the arguments of selectRejectedSQL.
func (r *rejectedFilter) args(limit int) []any {
	var since, until *time.Time
	if r.since.set {
		since = &r.since.t
	}
	if r.until.set {
		until = &r.until.t
	}
	ids := r.ids
	if ids == nil {
		ids = []int64{}
	}
	return []any{r.topic, r.reason, since, until, ids, len(r.ids) > 0, limit}
}

// selectRejectedSQL selects rejected rows in their original (commit) order:
// topic $1 ("" any), reason containing $2 ("" any), rejected at or after $3
// and before $4 (NULL: unbounded), ids (positions) $5 when $6, at most $7.
const selectRejectedSQL = `
SELECT tx_id::text, position, topic, key, headers->>'%[2]s', headers->>'%[3]s', octet_length(payload),
       created_at, rejected_at, rejected_by, reason
FROM %[1]s.outbox_rejected
WHERE ($1::text = '' OR topic = $1::text)
  AND ($2::text = '' OR strpos(lower(reason), lower($2::text)) > 0)
  AND ($3::timestamptz IS NULL OR rejected_at >= $3::timestamptz)
  AND ($4::timestamptz IS NULL OR rejected_at < $4::timestamptz)
  AND (NOT $6::boolean OR position = ANY ($5::bigint[]))
ORDER BY tx_id, position
LIMIT $7`

// moveRejectedSQL moves the rejected rows ($1 tx ids as text, $2 positions)
// back into the outbox as new rows, in their original order, and returns
// how many it moved.
const moveRejectedSQL = `
WITH moved AS (
    DELETE FROM %[1]s.outbox_rejected AS r
    USING unnest($1::text[], $2::bigint[]) AS s(tx_id, position)
    WHERE r.tx_id = s.tx_id::xid8 AND r.position = s.position
    RETURNING r.tx_id, r.position, r.topic, r.key, r.headers, r.payload
), inserted AS (
    INSERT INTO %[1]s.outbox (topic, key, headers, payload)
    SELECT topic, key, headers, payload FROM moved ORDER BY tx_id, position
    RETURNING 1
)
SELECT count(*) FROM inserted`

// deleteRejectedSQL deletes the rejected rows ($1 tx ids as text, $2
// positions) and returns how many it deleted.
const deleteRejectedSQL = `
WITH deleted AS (
    DELETE FROM %[1]s.outbox_rejected AS r
    USING unnest($1::text[], $2::bigint[]) AS s(tx_id, position)
    WHERE r.tx_id = s.tx_id::xid8 AND r.position = s.position
    RETURNING 1
)
SELECT count(*) FROM deleted`

// rejectedSQL fills the schema (checked by dbSettings.validate) into query.
func rejectedSQL(query, schema string) string {
	return fmt.Sprintf(query, pgx.Identifier{schema}.Sanitize(), messaging.HeaderID, messaging.HeaderType)
}

// rejectedRow is a rejected outbox row as dtxctl prints it.
type rejectedRow struct {
	ID           int64     `json:"id"`
	TxID         string    `json:"tx_id"`
	Topic        string    `json:"topic"`
	Key          *string   `json:"key"`
	MessageID    string    `json:"message_id"`
	Type         string    `json:"type"`
	PayloadBytes int       `json:"payload_bytes"`
	CreatedAt    time.Time `json:"created_at"`
	RejectedAt   time.Time `json:"rejected_at"`
	RejectedBy   string    `json:"rejected_by"`
	Reason       string    `json:"reason"`
}

func selectRejected(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, schema string, filter *rejectedFilter, limit int) ([]rejectedRow, error) {
	rows, err := q.Query(ctx, rejectedSQL(selectRejectedSQL, schema), filter.args(limit)...)
	if err != nil {
		return nil, fmt.Errorf("read %s.outbox_rejected: %w", schema, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rejectedRow, error) {
		var r rejectedRow
		var id, typ *string
		err := row.Scan(&r.TxID, &r.ID, &r.Topic, &r.Key, &id, &typ, &r.PayloadBytes, &r.CreatedAt, &r.RejectedAt, &r.RejectedBy, &r.Reason)
		r.MessageID, r.Type = orEmpty(id), orEmpty(typ)
		r.CreatedAt, r.RejectedAt = r.CreatedAt.UTC(), r.RejectedAt.UTC()
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("read %s.outbox_rejected: %w", schema, err)
	}
	return out, nil
}

func orEmpty(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func runRejectedList(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		db     dbSettings
		filter rejectedFilter
		limit  int
		asJSON bool
	)
	f := newFlags(cio, "List the rejected outbox rows in their original order: id, topic, key, message id\n"+
		"and type, when and by whom rejected, and why. It changes nothing.\n\n"+rejectedHelp, "[flags]")
	filter.register(f)
	f.fs.IntVar(&limit, "limit", 100, "show at most `N` rows (1..100000)")
	f.fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	db.register(f)
	if err := f.parse(cio, args); err != nil {
		return err
	}
	if limit < 1 || limit > 100000 {
		fmt.Fprintf(cio.stderr, "%s: --limit %d is outside 1..100000\n", cio.path, limit)
		return errUsage
	}
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		list, err := selectRejected(ctx, conn, db.schema, &filter, limit)
		if err != nil {
			return err
		}
		if asJSON {
			if list == nil {
				list = []rejectedRow{}
			}
			return printJSON(cio.stdout, list)
		}
		w := tabwriter.NewWriter(cio.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tTOPIC\tKEY\tMESSAGE ID\tTYPE\tBYTES\tREJECTED\tBY\tREASON")
		for _, r := range list {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.ID, r.Topic, dash(orEmpty(r.Key)), dash(r.MessageID), dash(r.Type),
				r.PayloadBytes, r.RejectedAt.Format(time.RFC3339), r.RejectedBy, oneLine(r.Reason, 120))
		}
		return w.Flush()
	})
}

// parseRejectedSelection reads the ids of args and checks that something is
// selected: ids, or --all (narrowed by the filters).
func parseRejectedSelection(cio *cmdIO, f *flags, args []string, filter *rejectedFilter, all *bool) error {
	flagArgs, positional := splitPositional(f.fs, args)
	if err := f.parse(cio, flagArgs); err != nil {
		return err
	}
	for _, a := range positional {
		for _, p := range splitComma(a) {
			id, err := strconv.ParseInt(p, 10, 64)
			if err != nil || id < 0 {
				fmt.Fprintf(cio.stderr, "%s: %q is not the id of a rejected row (a number, the ID column of list)\n", cio.path, p)
				return errUsage
			}
			filter.ids = append(filter.ids, id)
		}
	}
	switch {
	case len(filter.ids) > 0 && *all:
		fmt.Fprintf(cio.stderr, "%s: give ids or --all, not both\n", cio.path)
		return errUsage
	case len(filter.ids) == 0 && !*all:
		fmt.Fprintf(cio.stderr, "%s: no rows selected: give their ids, or --all (narrowed by --topic, --reason, --since, --until)\n", cio.path)
		return errUsage
	}
	return nil
}

// inRejectedTx selects the rows of filter in a transaction and calls fn
// with them; it fails, changing nothing, when an id given is not a rejected
// row.
func inRejectedTx(ctx context.Context, db *dbSettings, filter *rejectedFilter, fn func(tx pgx.Tx, rows []rejectedRow) error) error {
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			rows, err := selectRejected(ctx, tx, db.schema, filter, 1<<31-1)
			if err != nil {
				return err
			}
			if len(filter.ids) > 0 {
				var missing []string
				for _, id := range filter.ids {
					if !slices.ContainsFunc(rows, func(r rejectedRow) bool { return r.ID == id }) {
						missing = append(missing, strconv.FormatInt(id, 10))
					}
				}
				if len(missing) > 0 {
					return fmt.Errorf("no rejected row with id %s (or it does not match the filters); nothing was changed", strings.Join(missing, ", "))
				}
			}
			return fn(tx, rows)
		})
	})
}

// keysOf returns the tx ids and positions of rows, for the move and
// delete statements.
func keysOf(rows []rejectedRow) ([]string, []int64) {
	tx := make([]string, len(rows))
	pos := make([]int64, len(rows))
	for i, r := range rows {
		tx[i], pos[i] = r.TxID, r.ID
	}
	return tx, pos
}

func runRejectedRequeue(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		db     dbSettings
		filter rejectedFilter
		all    bool
	)
	f := newFlags(cio, "Move rejected rows back into the outbox, in one transaction, as new outbox rows\n"+
		"in their original order, so that the relay publishes them (after every row already\n"+
		"in the outbox; their record timestamp is the time of the requeue). Fix the cause\n"+
		"first (a topic's max.message.bytes, the record): a row refused again is rejected\n"+
		"again. Prints how many rows were requeued.\n\n"+rejectedHelp, "(ID... | --all) [flags]")
	filter.register(f)
	f.fs.BoolVar(&all, "all", false, "requeue every rejected row the filters keep")
	db.register(f)
	if err := parseRejectedSelection(cio, f, args, &filter, &all); err != nil {
		return err
	}
	if err := db.validate(); err != nil {
		return err
	}
	ob, err := outbox.New(outbox.Config{Schema: db.schema})
	if err != nil {
		return err
	}
	var n int64
	err = inRejectedTx(ctx, &db, &filter, func(tx pgx.Tx, rows []rejectedRow) error {
		if len(rows) == 0 {
			return nil
		}
		// Take the outbox's key locks before the first write, as a writer
		// of the outbox does, so that the requeued rows keep commit order
		// with the other writers of their keys.
		byTopic := map[string][]string{}
		for _, r := range rows {
			if r.Key != nil {
				byTopic[r.Topic] = append(byTopic[r.Topic], *r.Key)
			}
		}
		topics := make([]string, 0, len(byTopic))
		for t := range byTopic {
			topics = append(topics, t)
		}
		slices.Sort(topics)
		for _, t := range topics {
			if err := ob.Lock(ctx, tx, t, byTopic[t]...); err != nil {
				return err
			}
		}
		txIDs, positions := keysOf(rows)
		if err := tx.QueryRow(ctx, rejectedSQL(moveRejectedSQL, db.schema), txIDs, positions).Scan(&n); err != nil {
			return fmt.Errorf("move %d rows into %s.outbox: %w", len(rows), db.schema, err)
		}
		if n != int64(len(rows)) {
			return fmt.Errorf("%d of the %d rows selected were requeued or deleted meanwhile; nothing was changed: run it again", int64(len(rows))-n, len(rows))
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(cio.stdout, "requeued %d rejected rows into the outbox\n", n)
	return nil
}

func runRejectedDelete(ctx context.Context, cio *cmdIO, args []string) error {
	var (
		db     dbSettings
		filter rejectedFilter
		all    bool
		yes    bool
	)
	f := newFlags(cio, "Delete rejected rows for good, in one transaction: their messages are never\n"+
		"published. Needs --yes. Prints how many rows were deleted.\n\n"+rejectedHelp, "(ID... | --all) --yes [flags]")
	filter.register(f)
	f.fs.BoolVar(&all, "all", false, "delete every rejected row the filters keep")
	f.fs.BoolVar(&yes, "yes", false, "confirm the deletion (required)")
	db.register(f)
	if err := parseRejectedSelection(cio, f, args, &filter, &all); err != nil {
		return err
	}
	if !yes {
		fmt.Fprintf(cio.stderr, "%s: deleting rejected rows loses their messages for good: add --yes to confirm\n", cio.path)
		return errUsage
	}
	var n int64
	err := inRejectedTx(ctx, &db, &filter, func(tx pgx.Tx, rows []rejectedRow) error {
		if len(rows) == 0 {
			return nil
		}
		txIDs, positions := keysOf(rows)
		if err := tx.QueryRow(ctx, rejectedSQL(deleteRejectedSQL, db.schema), txIDs, positions).Scan(&n); err != nil {
			return fmt.Errorf("delete %d rows of %s.outbox_rejected: %w", len(rows), db.schema, err)
		}
		if n != int64(len(rows)) {
			return errors.New("some of the rows selected were requeued or deleted meanwhile; nothing was changed: run it again")
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(cio.stdout, "deleted %d rejected rows\n", n)
	return nil
}
