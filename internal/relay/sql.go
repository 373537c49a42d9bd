package relay

import (
	"embed"
	"fmt"

	"github.com/vextrus/dtx/internal/sqlfile"
)

//go:embed sql/*.sql
var sqlFiles embed.FS

// queries are the relay's statements, with the schema filled in.
type queries struct {
	acquire, renew, release, fence, reject string
	// outbox_held: see held.go.
	hold, heldTopics, heldRead, heldDelete, heldReject, heldCount string
}

func loadQueries(schema string) (queries, error) {
	l := sqlfile.NewLoader(sqlFiles, "sql", schema)
	q := queries{
		acquire: l.Load("lease_acquire.sql"),
		renew:   l.Load("lease_renew.sql"),
		release: l.Load("lease_release.sql"),
		fence:   l.Load("lease_fence.sql"),
		reject:  l.Load("reject.sql"),

		hold:       l.Load("hold.sql"),
		heldTopics: l.Load("held_topics.sql"),
		heldRead:   l.Load("held_read.sql"),
		heldDelete: l.Load("held_delete.sql"),
		heldReject: l.Load("held_reject.sql"),
		heldCount:  l.Load("held_count.sql"),
	}
	if err := l.Err(); err != nil {
		return queries{}, fmt.Errorf("relay: %w", err)
	}
	return q, nil
}
