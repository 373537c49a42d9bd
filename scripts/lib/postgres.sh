# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154 # DTX_ROOT, DTX_DEV, DTX_DEV_BIN come from common.sh; the results are for deps.sh
# PostgreSQL for development and tests. Source after common.sh.
#
# postgres_up picks, in this order: DTX_DATABASE_URL; a local Debian cluster
# (started if down, installed from Debian packages when root on Debian);
# `docker compose up -d postgres`. It sets DTX_DATABASE_URL and prints one
# line saying what it uses. postgres_down stops only what postgres_up started.

DTX_PG_USER=dtx
DTX_PG_PASSWORD=dtx
DTX_PG_DATABASE=dtx

# Markers saying that deps.sh started a server, so down.sh stops only that.
PG_CLUSTER_MARKER="$DTX_DEV/postgres-cluster.started"
PG_COMPOSE_MARKER="$DTX_DEV/postgres-compose.started"

pg_default_url() {
	printf 'postgres://%s:%s@127.0.0.1:%s/%s?sslmode=disable' \
		"$DTX_PG_USER" "$DTX_PG_PASSWORD" "$1" "$DTX_PG_DATABASE"
}

pg_wait() { # URL TIMEOUT
	"$DTX_DEV_BIN" wait postgres --url "$1" --timeout "$2" >/dev/null
}

# pg_cluster prints "VERSION NAME PORT STATUS" of the local Debian cluster
# to use: the one on port 5432 if any, else the newest.
pg_cluster() {
	have pg_lsclusters || return 1
	local line
	line=$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print; exit }')
	[[ -n $line ]] || line=$(pg_lsclusters -h 2>/dev/null | sort -V | tail -n 1)
	[[ -n $line ]] || return 1
	awk '{ print $1, $2, $3, $4 }' <<<"$line"
}

# pg_as_postgres runs a command as the postgres OS user, from a folder that
# user can read.
pg_as_postgres() {
	if have runuser; then
		(cd / && runuser -u postgres -- "$@")
	else
		local cmd
		printf -v cmd '%q ' "$@"
		(cd / && su postgres -s /bin/bash -c "$cmd")
	fi
}

# pg_ensure_role_and_db creates (or repairs) the dtx role and database.
pg_ensure_role_and_db() {
	local port=$1
	pg_as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DTX_PG_USER') THEN
    CREATE ROLE $DTX_PG_USER LOGIN CREATEDB PASSWORD '$DTX_PG_PASSWORD';
  ELSE
    ALTER ROLE $DTX_PG_USER LOGIN CREATEDB PASSWORD '$DTX_PG_PASSWORD';
  END IF;
END
\$\$;
SELECT format('CREATE DATABASE %I OWNER %I', '$DTX_PG_DATABASE', '$DTX_PG_USER')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DTX_PG_DATABASE')
\gexec
SQL
}

# pg_use_cluster starts the local cluster if needed and prepares dtx on it.
pg_use_cluster() {
	local version name port status how
	read -r version name port status < <(pg_cluster) || return 1
	if [[ $status == online* ]]; then
		how=running
		[[ -f $PG_CLUSTER_MARKER ]] && how=reused
	else
		is_root || die "PostgreSQL cluster $version/$name is down and starting it needs root: run 'sudo pg_ctlcluster $version $name start', or set DTX_DATABASE_URL"
		note "starting PostgreSQL cluster $version/$name"
		pg_ctlcluster "$version" "$name" start >&2 ||
			die "could not start PostgreSQL cluster $version/$name; see /var/log/postgresql/postgresql-$version-$name.log"
		echo "$version $name" >"$PG_CLUSTER_MARKER"
		how=started
	fi
	if is_root; then
		pg_ensure_role_and_db "$port" ||
			die "could not create role and database '$DTX_PG_DATABASE' on PostgreSQL cluster $version/$name"
	fi
	DTX_DATABASE_URL=$(pg_default_url "$port")
	if ! pg_wait "$DTX_DATABASE_URL" 60s; then
		is_root || die "PostgreSQL cluster $version/$name does not accept $DTX_PG_USER/$DTX_PG_PASSWORD on 127.0.0.1:$port; \
create the role and database once with: sudo -u postgres psql -c \"CREATE ROLE $DTX_PG_USER LOGIN CREATEDB PASSWORD '$DTX_PG_PASSWORD'\" && sudo -u postgres createdb -O $DTX_PG_USER $DTX_PG_DATABASE"
		die "PostgreSQL cluster $version/$name does not accept $DTX_PG_USER/$DTX_PG_PASSWORD over TCP on 127.0.0.1:$port \
(pg_hba.conf must allow scram-sha-256 or md5 for host 127.0.0.1/32)"
	fi
	echo "postgres: PostgreSQL $version (local cluster $version/$name) at 127.0.0.1:$port, database $DTX_PG_DATABASE ($how)"
}

pg_use_compose() {
	if ! have docker || ! docker info >/dev/null 2>&1 || ! docker compose version >/dev/null 2>&1; then
		return 1
	fi
	local how=running
	if [[ -z $(cd "$DTX_ROOT" && docker compose ps -q --status running postgres 2>/dev/null) ]]; then
		note "starting PostgreSQL with docker compose"
		(cd "$DTX_ROOT" && docker compose up -d postgres) >&2 ||
			die "docker compose up -d postgres failed"
		touch "$PG_COMPOSE_MARKER"
		how=started
	elif [[ -f $PG_COMPOSE_MARKER ]]; then
		how=reused
	fi
	DTX_DATABASE_URL=$(pg_default_url 5432)
	pg_wait "$DTX_DATABASE_URL" 90s || die "the compose postgres service does not answer on 127.0.0.1:5432"
	echo "postgres: PostgreSQL (docker compose service postgres) at 127.0.0.1:5432, database $DTX_PG_DATABASE ($how)"
}

postgres_up() {
	if [[ -n ${DTX_DATABASE_URL:-} ]]; then
		pg_wait "$DTX_DATABASE_URL" 60s ||
			die "DTX_DATABASE_URL ($(redact_url "$DTX_DATABASE_URL")) cannot be used (see above); fix it, or unset it to use a local PostgreSQL"
		echo "postgres: external at $(redact_url "$DTX_DATABASE_URL") (DTX_DATABASE_URL)"
		return
	fi
	if pg_cluster >/dev/null; then
		pg_use_cluster
		return
	fi
	if can_apt; then
		note "PostgreSQL is not installed; installing it from Debian packages"
		apt_install postgresql || die "apt-get install postgresql failed"
		pg_cluster >/dev/null || die "PostgreSQL was installed but pg_lsclusters shows no cluster"
		pg_use_cluster
		return
	fi
	if pg_use_compose; then
		return
	fi
	die "no PostgreSQL found. Either set DTX_DATABASE_URL to a PostgreSQL 15+ database \
(e.g. postgres://dtx:dtx@127.0.0.1:5432/dtx?sslmode=disable), install PostgreSQL \
(Debian/Ubuntu: sudo apt-get install postgresql; macOS: brew install postgresql@15) and run this again, \
or start Docker so that 'docker compose up -d postgres' can run"
}

postgres_down() {
	local version name
	if [[ -f $PG_CLUSTER_MARKER ]]; then
		read -r version name <"$PG_CLUSTER_MARKER" || true
		if [[ -n ${version:-} && -n ${name:-} ]] && have pg_ctlcluster; then
			if pg_lsclusters -h 2>/dev/null | awk -v v="$version" -v n="$name" '$1 == v && $2 == n && $4 ~ /^online/ { f = 1 } END { exit !f }'; then
				pg_ctlcluster "$version" "$name" stop >&2 || warn "could not stop PostgreSQL cluster $version/$name"
				echo "stopped PostgreSQL cluster $version/$name"
			fi
		fi
		rm -f "$PG_CLUSTER_MARKER"
	fi
	if [[ -f $PG_COMPOSE_MARKER ]]; then
		if have docker && docker info >/dev/null 2>&1; then
			(cd "$DTX_ROOT" && docker compose stop postgres) >&2 || warn "docker compose stop postgres failed"
			echo "stopped docker compose service postgres"
		fi
		rm -f "$PG_COMPOSE_MARKER"
	fi
}
