# shellcheck shell=bash
# shellcheck disable=SC2034 # DTX_DEV_BIN is for the scripts that source this file
# Helpers shared by scripts/deps.sh, scripts/down.sh and .ci/run.
# Source this file; it defines functions and a few variables, runs nothing.

# DTX_ROOT is the repository root; DTX_DEV the ignored folder for local state.
DTX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DTX_DEV="$DTX_ROOT/.dev"

# note prints progress to stderr; summary lines go to stdout.
note() { printf 'deps: %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
	printf 'ERROR: %s\n' "$*" >&2
	exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

is_root() { [[ $(id -u) == 0 ]]; }

# can_apt reports whether we may install Debian packages ourselves.
can_apt() { is_root && have apt-get && [[ -r /etc/debian_version ]]; }

# is_true reports whether a setting such as CI=true or X=1 is switched on.
is_true() {
	case "${1,,}" in
	1 | true | yes | on) return 0 ;;
	*) return 1 ;;
	esac
}

DTX_APT_UPDATED=${DTX_APT_UPDATED:-}

# apt_install installs Debian packages, running apt-get update once per run.
apt_install() {
	can_apt || return 1
	note "installing Debian packages: $*"
	if [[ -z $DTX_APT_UPDATED ]]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
		DTX_APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# redact_url hides the password of a connection string (URL or key=value).
redact_url() {
	local re='^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):[^@]*@(.*)$'
	if [[ $1 =~ $re ]]; then
		printf '%s:***@%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
	elif [[ $1 =~ ^(.*password=)[^[:space:]]*(.*)$ ]]; then
		printf '%s***%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
	else
		printf '%s\n' "$1"
	fi
}

# proc_args prints the command line of a process, or nothing if it is gone.
proc_args() {
	if [[ -r /proc/$1/cmdline ]]; then
		tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
	else
		ps -o args= -p "$1" 2>/dev/null || true
	fi
}

# pidfile_alive PIDFILE PATTERN: the process named in PIDFILE runs and its
# command line contains PATTERN (so a reused pid is not taken for ours).
pidfile_alive() {
	local pid
	[[ -s $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	[[ $(proc_args "$pid") == *"$2"* ]]
}

# stop_pidfile PIDFILE PATTERN NAME [GRACE_SECONDS]: stops the process named
# in PIDFILE if it is ours (TERM, then KILL after the grace period) and
# removes the file. Prints what it stopped; returns 1 if nothing ran.
stop_pidfile() {
	local pidfile=$1 pattern=$2 name=$3 grace=${4:-30} pid i
	if ! pidfile_alive "$pidfile" "$pattern"; then
		rm -f "$pidfile"
		return 1
	fi
	pid=$(<"$pidfile")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		warn "$name (pid $pid) did not stop within ${grace}s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	rm -f "$pidfile"
	echo "stopped $name (pid $pid)"
}

# start_background PIDFILE LOGFILE CMD...: runs CMD detached from this
# terminal and session, writing its pid to PIDFILE and its output to LOGFILE.
start_background() {
	local pidfile=$1 logfile=$2
	shift 2
	rm -f "$pidfile"
	local launcher=()
	if have setsid; then launcher=(setsid); fi
	# The inner shell writes its own pid, then becomes CMD by exec, so the
	# pid is CMD's even when setsid forks.
	# shellcheck disable=SC2016 # $$ and $1 belong to the inner shell
	nohup "${launcher[@]}" bash -c 'echo $$ >"$1"; shift; exec "$@"' bash "$pidfile" "$@" \
		>>"$logfile" 2>&1 </dev/null &
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -s $pidfile ]] && return 0
		sleep 0.1
	done
	return 1
}

# listener_pid PORT prints the pid of the process listening on TCP PORT, if
# it can be seen (ss or lsof; another user's process needs root).
listener_pid() {
	local out
	if have ss; then
		out=$(ss -ltnpH "sport = :$1" 2>/dev/null)
		[[ $out =~ pid=([0-9]+) ]] && echo "${BASH_REMATCH[1]}"
	elif have lsof; then
		lsof -t -iTCP:"$1" -sTCP:LISTEN 2>/dev/null | head -n 1
	fi
	return 0
}

# port_open HOST PORT: something accepts TCP connections there.
port_open() {
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# write_env_file PATH NAME=VALUE...: writes export lines atomically.
write_env_file() {
	local path=$1 tmp kv name value
	shift
	tmp="$path.tmp.$$"
	{
		echo "# Written by scripts/deps.sh. Load it with: . .dev/env"
		for kv in "$@"; do
			name=${kv%%=*}
			value=${kv#*=}
			printf "export %s='%s'\n" "$name" "${value//\'/\'\\\'\'}"
		done
	} >"$tmp"
	mv -f "$tmp" "$path"
}

# with_lock re-runs the calling script under an exclusive lock on
# .dev/deps.lock, so two deps.sh or down.sh runs never interleave. flock -o
# keeps the lock out of the servers the script starts.
with_lock() {
	if [[ -n ${DTX_DEPS_LOCKED:-} ]]; then
		unset DTX_DEPS_LOCKED # the servers we start must not inherit it
		return 0
	fi
	have flock || return 0
	mkdir -p "$DTX_DEV"
	local rc=0
	DTX_DEPS_LOCKED=1 flock -o -w 600 -E 99 "$DTX_DEV/deps.lock" bash "$@" || rc=$?
	((rc != 99)) || die "another scripts/deps.sh or scripts/down.sh has held .dev/deps.lock for 10 minutes"
	exit "$rc"
}

# build_dtx_dev builds the development command into .dev/bin/dtx-dev.
# The Go build cache makes this cheap when nothing changed.
build_dtx_dev() {
	have go || die "go is not on PATH: install Go 1.26 (https://go.dev/doc/install) and try again"
	mkdir -p "$DTX_DEV/bin"
	# Build beside the target and rename, so a running dtx-dev kafka keeps
	# its binary.
	(cd "$DTX_ROOT" && go build -o "$DTX_DEV/bin/dtx-dev.new" ./cmd/dtx-dev) ||
		die "could not build cmd/dtx-dev"
	mv -f "$DTX_DEV/bin/dtx-dev.new" "$DTX_DEV/bin/dtx-dev"
	DTX_DEV_BIN="$DTX_DEV/bin/dtx-dev"
}
