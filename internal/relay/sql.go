package relay

import (
	"embed"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed sql/*.sql
var sqlFiles embed.FS

// queries are the relay's statements, with the schema filled in.
type queries struct {
	acquire, renew, release, fence, reject string
}

func loadQueries(schema string) (queries, error) {
	var q queries
	r := strings.NewReplacer("{{.schema}}", pgx.Identifier{schema}.Sanitize())
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"lease_acquire.sql", &q.acquire},
		{"lease_renew.sql", &q.renew},
		{"lease_release.sql", &q.release},
		{"lease_fence.sql", &q.fence},
		{"reject.sql", &q.reject},
	} {
		b, err := sqlFiles.ReadFile("sql/" + f.name)
		if err != nil {
			return q, fmt.Errorf("relay: embedded query %s: %w", f.name, err)
		}
		*f.dst = r.Replace(string(b))
	}
	return q, nil
}
