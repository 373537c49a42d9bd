# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154 # DTX_ROOT, DTX_DEV, DTX_DEV_BIN come from common.sh; the results are for deps.sh
# Kafka for development and tests. Source after common.sh.
#
# kafka_up picks, in this order: DTX_KAFKA_BROKERS; a single-node Apache
# Kafka (KRaft) run from jars that Maven fetches into .dev/kafka/libs; the
# embedded development broker (dtx-dev kafka, franz-go's kfake), with a
# warning. CI=true or DTX_REQUIRE_APACHE_KAFKA=1 forbids the fallback, and
# DTX_DEV_KAFKA=kfake chooses the embedded broker on purpose. It sets
# DTX_KAFKA_BROKERS and DTX_KAFKA_KIND and prints one line saying what it
# uses. kafka_down stops only a broker that kafka_up started.

KAFKA_DIR="$DTX_DEV/kafka"
KAFKA_POM="$DTX_ROOT/scripts/kafka/pom.xml"
KAFKA_PROPS_TEMPLATE="$DTX_ROOT/scripts/kafka/server.properties"
KAFKA_LOG4J="$DTX_ROOT/scripts/kafka/log4j2.properties"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOGS="$KAFKA_DIR/logs"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_PIDFILE="$KAFKA_DIR/kafka.pid"
KFAKE_PIDFILE="$KAFKA_DIR/kfake.pid"
# What a command line must contain to be our broker, not a reused pid.
KAFKA_PATTERN="kafka.Kafka $KAFKA_PROPS"
KFAKE_PATTERN="$DTX_DEV/bin/dtx-dev kafka"

KAFKA_PORT=${DTX_DEV_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${DTX_DEV_KAFKA_CONTROLLER_PORT:-9093}
# The SASL_PLAINTEXT listener with SCRAM-SHA-256 and SCRAM-SHA-512, user dtx,
# password in .dev/kafka-scram.password (made once, random).
KAFKA_SCRAM_PORT=${DTX_DEV_KAFKA_SCRAM_PORT:-9094}
KAFKA_SCRAM_USER=dtx
KAFKA_SCRAM_PASSWORD_FILE="$DTX_DEV/kafka-scram.password"
KAFKA_START_TIMEOUT=${DTX_DEV_KAFKA_START_TIMEOUT:-90}
KAFKA_ADDR="127.0.0.1:$KAFKA_PORT"

# stop_apache_kafka and stop_kfake stop our broker of that kind, if it runs,
# printing what they stopped; they return 1 when nothing ran.
stop_apache_kafka() {
	rm -f "$KAFKA_DIR/kafka.addr" "$KAFKA_DIR/scram.addr"
	stop_pidfile "$KAFKA_PIDFILE" "$KAFKA_PATTERN" "Apache Kafka" 30
}
stop_kfake() {
	rm -f "$KAFKA_DIR/kfake.addr"
	stop_pidfile "$KFAKE_PIDFILE" "$KFAKE_PATTERN" "the embedded Kafka broker" 10
}

# kafka_version prints the Apache Kafka version that pom.xml names.
kafka_version() {
	sed -n 's:.*<kafka.version>\([^<]*\)</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n 1
}

kafka_wait() { # ADDR TIMEOUT
	"$DTX_DEV_BIN" wait kafka --brokers "$1" --timeout "$2" >/dev/null
}

# kafka_wait_started PIDFILE PATTERN TIMEOUT_SECONDS: waits until the broker
# we just started answers, giving up early if its process exits.
kafka_wait_started() {
	local pidfile=$1 pattern=$2 deadline=$((SECONDS + $3))
	while ((SECONDS < deadline)); do
		pidfile_alive "$pidfile" "$pattern" || return 1
		if "$DTX_DEV_BIN" wait kafka --brokers "$KAFKA_ADDR" --timeout 3s >/dev/null 2>&1; then
			return 0
		fi
	done
	return 1
}

# kafka_ports_free fails with a clear message if a process that is not ours
# holds one of the broker's ports.
kafka_ports_free() {
	local port
	for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SCRAM_PORT"; do
		if port_open 127.0.0.1 "$port"; then
			die "127.0.0.1:$port is in use by a process scripts/deps.sh did not start. \
If it is a Kafka broker you want to use, set DTX_KAFKA_BROKERS=127.0.0.1:$port; \
otherwise stop it, or choose other ports with DTX_DEV_KAFKA_PORT, DTX_DEV_KAFKA_CONTROLLER_PORT and DTX_DEV_KAFKA_SCRAM_PORT."
		fi
	done
}

# kafka_find_foreign looks at a broker that holds our port but was started
# by another checkout's deps.sh (the same development setup in another
# folder). It sets FOREIGN_KIND (apache or kfake), FOREIGN_VERSION and
# FOREIGN_FROM, and fails if the port is free or held by anything else.
kafka_find_foreign() {
	local pid args libs jar
	port_open 127.0.0.1 "$KAFKA_PORT" || return 1
	pid=$(listener_pid "$KAFKA_PORT")
	[[ -n $pid ]] || return 1
	args=$(proc_args "$pid")
	FOREIGN_VERSION=
	if [[ $args =~ \ -cp\ ([^ ]*)/libs/\*\ kafka\.Kafka\ ([^ ]*)/\.dev/kafka/server\.properties ]]; then
		FOREIGN_KIND=apache
		FOREIGN_FROM=${BASH_REMATCH[2]}
		libs=${BASH_REMATCH[1]}/libs
		for jar in "$libs"/kafka_2.*-*.jar; do
			[[ -f $jar ]] || continue
			jar=${jar##*/kafka_2.*-}
			FOREIGN_VERSION=${jar%.jar}
		done
	elif [[ $args =~ ^([^ ]*)/\.dev/bin/dtx-dev\ kafka ]]; then
		FOREIGN_KIND=kfake
		FOREIGN_FROM=${BASH_REMATCH[1]}
	else
		return 1
	fi
	kafka_wait "$KAFKA_ADDR" 30s 2>/dev/null
}

# kafka_use_foreign reuses the broker kafka_find_foreign found.
kafka_use_foreign() {
	DTX_KAFKA_BROKERS=$KAFKA_ADDR
	if [[ $FOREIGN_KIND == apache ]]; then
		DTX_KAFKA_KIND="apache-kafka-${FOREIGN_VERSION:-unknown}"
		echo "kafka: Apache Kafka ${FOREIGN_VERSION:-(version unknown)} (KRaft, single node) at $KAFKA_ADDR, started from $FOREIGN_FROM (reused)"
		return
	fi
	kfake_warning "the embedded broker started from $FOREIGN_FROM holds $KAFKA_ADDR."
	DTX_KAFKA_KIND=embedded-kfake
	echo "kafka: embedded development broker (franz-go kfake) at $KAFKA_ADDR, started from $FOREIGN_FROM (reused)"
}

# java_major prints the major version of the java binary $1.
java_major() {
	local v
	v=$("$1" -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')
	v=${v#1.} # 1.8.0_412 is Java 8
	printf '%s\n' "${v%%[.+-]*}"
}

# find_java sets JAVA_BIN to a Java 17 or newer: JAVA_HOME's, the one on
# PATH, or one installed under /usr/lib/jvm.
find_java() {
	local candidates=() j major
	[[ -n ${JAVA_HOME:-} ]] && candidates+=("$JAVA_HOME/bin/java")
	have java && candidates+=("$(command -v java)")
	candidates+=(/usr/lib/jvm/*/bin/java)
	for j in "${candidates[@]}"; do
		[[ -x $j ]] || continue
		major=$(java_major "$j")
		if [[ $major =~ ^[0-9]+$ ]] && ((major >= 17)); then
			JAVA_BIN=$j
			return 0
		fi
	done
	return 1
}

ensure_java() {
	find_java && return 0
	can_apt || return 1
	apt_install openjdk-17-jre-headless && find_java
}

ensure_maven() {
	have mvn && return 0
	can_apt || return 1
	apt_install maven && have mvn
}

# kafka_libs_stamp identifies the jar set: it changes when pom.xml does.
kafka_libs_stamp() { cksum <"$KAFKA_POM"; }

kafka_libs_complete() {
	[[ -f $KAFKA_LIBS/.complete && $(<"$KAFKA_LIBS/.complete") == "$(kafka_libs_stamp)" ]]
}

# kafka_fetch_libs copies the broker's jars from Maven Central (through the
# local Maven repository) unless the cached set matches pom.xml.
kafka_fetch_libs() {
	kafka_libs_complete && return 0
	if ! ensure_maven; then
		KAFKA_FAIL_REASON="Maven (mvn) is not installed, so the Apache Kafka jars cannot be fetched (install maven)"
		return 1
	fi
	note "fetching Apache Kafka $(kafka_version) jars with Maven (first run only)"
	local started=$SECONDS tmp="$KAFKA_DIR/libs.new"
	rm -rf "$tmp"
	if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_DIR/mvn.log" 2>&1; then
		tail -n 30 "$KAFKA_DIR/mvn.log" >&2
		rm -rf "$tmp"
		KAFKA_FAIL_REASON="Maven could not fetch the Apache Kafka jars (see .dev/kafka/mvn.log)"
		return 1
	fi
	kafka_libs_stamp >"$tmp/.complete"
	rm -rf "$KAFKA_LIBS"
	mv "$tmp" "$KAFKA_LIBS"
	note "fetched $(find "$KAFKA_LIBS" -name '*.jar' | wc -l | tr -d ' ') jars in $((SECONDS - started))s"
}

# kafka_java runs a Java main class of the broker.
kafka_java() {
	"$JAVA_BIN" -Xmx256m -Dkafka.logs.dir="$KAFKA_LOGS" -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
		-cp "$KAFKA_LIBS/*" "$@"
}

# kafka_prepare_storage renders server.properties and formats the data
# folder once. A change of version or ports formats it afresh: the metadata
# log records the controller's address.
kafka_prepare_storage() {
	local props stamp cluster_id
	props=$(<"$KAFKA_PROPS_TEMPLATE")
	props=${props//@PORT@/$KAFKA_PORT}
	props=${props//@CONTROLLER_PORT@/$KAFKA_CONTROLLER_PORT}
	props=${props//@SCRAM_PORT@/$KAFKA_SCRAM_PORT}
	props=${props//@DATA_DIR@/$KAFKA_DATA}
	printf '%s\n' "$props" >"$KAFKA_PROPS"

	stamp="kafka=$(kafka_version) port=$KAFKA_PORT controller_port=$KAFKA_CONTROLLER_PORT scram_port=$KAFKA_SCRAM_PORT"
	if [[ -f $KAFKA_DATA/meta.properties && -f $KAFKA_DIR/format.stamp &&
		$(<"$KAFKA_DIR/format.stamp") == "$stamp" ]]; then
		return 0
	fi
	if [[ -d $KAFKA_DATA ]]; then
		note "Kafka version or ports changed: formatting fresh storage in .dev/kafka/data"
		rm -rf "$KAFKA_DATA"
	fi
	mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
	cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$KAFKA_DIR/format.log" | tail -n 1)
	if [[ -z $cluster_id ]] ||
		! kafka_scram_password ||
		! kafka_java kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$KAFKA_PROPS" \
			--add-scram "SCRAM-SHA-256=[name=$KAFKA_SCRAM_USER,password=$(<"$KAFKA_SCRAM_PASSWORD_FILE")]" \
			--add-scram "SCRAM-SHA-512=[name=$KAFKA_SCRAM_USER,password=$(<"$KAFKA_SCRAM_PASSWORD_FILE")]" \
			>>"$KAFKA_DIR/format.log" 2>&1; then
		tail -n 20 "$KAFKA_DIR/format.log" >&2
		rm -rf "$KAFKA_DATA"
		KAFKA_FAIL_REASON="formatting the Apache Kafka storage failed (see .dev/kafka/format.log)"
		return 1
	fi
	echo "$stamp" >"$KAFKA_DIR/format.stamp"
}

# kafka_scram_password makes the SCRAM user's password file once: 32 hex
# digits, readable by its owner only.
kafka_scram_password() {
	[[ -s $KAFKA_SCRAM_PASSWORD_FILE ]] && return 0
	(umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$KAFKA_SCRAM_PASSWORD_FILE")
}

# kafka_scram_env sets DTX_DEV_KAFKA_SCRAM_* when our running broker was
# started with the SCRAM listener (a broker started before it existed has
# none: it is reused as it is until restarted).
kafka_scram_env() {
	DTX_DEV_KAFKA_SCRAM_BROKERS= DTX_DEV_KAFKA_SCRAM_USERNAME= DTX_DEV_KAFKA_SCRAM_PASSWORD_FILE=
	[[ $(cat "$KAFKA_DIR/scram.addr" 2>/dev/null) == "127.0.0.1:$KAFKA_SCRAM_PORT" && -s $KAFKA_SCRAM_PASSWORD_FILE ]] || return 0
	DTX_DEV_KAFKA_SCRAM_BROKERS="127.0.0.1:$KAFKA_SCRAM_PORT"
	DTX_DEV_KAFKA_SCRAM_USERNAME=$KAFKA_SCRAM_USER
	DTX_DEV_KAFKA_SCRAM_PASSWORD_FILE=$KAFKA_SCRAM_PASSWORD_FILE
}

kafka_print_log_tail() {
	local f
	for f in "$KAFKA_LOGS/server.log" "$KAFKA_DIR/kafka.out"; do
		[[ -s $f ]] || continue
		printf -- '--- last lines of %s ---\n' "${f#"$DTX_ROOT"/}" >&2
		tail -n 40 "$f" >&2
	done
}

# apache_kafka_up reuses or starts our Apache Kafka broker. On failure it
# returns 1 with KAFKA_FAIL_REASON set.
apache_kafka_up() {
	local version started
	version=$(kafka_version)
	if pidfile_alive "$KAFKA_PIDFILE" "$KAFKA_PATTERN"; then
		if [[ $(cat "$KAFKA_DIR/kafka.addr" 2>/dev/null) == "$KAFKA_ADDR $version" ]] && kafka_wait "$KAFKA_ADDR" 30s 2>/dev/null; then
			DTX_KAFKA_BROKERS=$KAFKA_ADDR
			DTX_KAFKA_KIND="apache-kafka-$version"
			kafka_scram_env
			echo "kafka: Apache Kafka $version (KRaft, single node) at $KAFKA_ADDR (reused)"
			return 0
		fi
		note "our Apache Kafka broker is not Kafka $version answering on $KAFKA_ADDR: restarting it"
		stop_apache_kafka >&2 || true
	fi
	if kafka_find_foreign; then
		if [[ $FOREIGN_KIND == apache ]] || ! kafka_require_apache; then
			kafka_use_foreign
			return 0
		fi
		die "the embedded Kafka broker started from $FOREIGN_FROM holds $KAFKA_ADDR, but $(kafka_require_apache_why) requires Apache Kafka: stop it with that folder's scripts/down.sh"
	fi
	kafka_ports_free

	if ! ensure_java; then
		KAFKA_FAIL_REASON="no Java 17 or newer found (install openjdk-17-jre-headless, or set JAVA_HOME)"
		return 1
	fi
	kafka_fetch_libs || return 1
	kafka_prepare_storage || return 1

	note "starting Apache Kafka $version on $KAFKA_ADDR (Java $(java_major "$JAVA_BIN"))"
	started=$SECONDS
	if ! start_background "$KAFKA_PIDFILE" "$KAFKA_DIR/kafka.out" \
		"$JAVA_BIN" -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
		-Dkafka.logs.dir="$KAFKA_LOGS" -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
		-cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS"; then
		KAFKA_FAIL_REASON="the Apache Kafka process did not start"
		return 1
	fi
	echo "$KAFKA_ADDR $version" >"$KAFKA_DIR/kafka.addr"
	echo "127.0.0.1:$KAFKA_SCRAM_PORT" >"$KAFKA_DIR/scram.addr"
	if ! kafka_wait_started "$KAFKA_PIDFILE" "$KAFKA_PATTERN" "$KAFKA_START_TIMEOUT"; then
		if pidfile_alive "$KAFKA_PIDFILE" "$KAFKA_PATTERN"; then
			KAFKA_FAIL_REASON="Apache Kafka did not answer on $KAFKA_ADDR within ${KAFKA_START_TIMEOUT}s"
		else
			KAFKA_FAIL_REASON="Apache Kafka exited during start-up"
		fi
		warn "$KAFKA_FAIL_REASON"
		kafka_print_log_tail
		stop_apache_kafka >&2 || true
		return 1
	fi
	DTX_KAFKA_BROKERS=$KAFKA_ADDR
	DTX_KAFKA_KIND="apache-kafka-$version"
	kafka_scram_env
	echo "kafka: Apache Kafka $version (KRaft, single node) at $KAFKA_ADDR (started in $((SECONDS - started))s)"
}

kfake_warning() {
	warn "================================================================================"
	warn "Kafka is the EMBEDDED development broker (franz-go kfake), NOT Apache Kafka:"
	warn "  $1"
	warn "Tests that pass against it prove less than tests against Apache Kafka."
	warn "================================================================================"
}

# kfake_up reuses or starts the embedded development broker; $1 says why.
kfake_up() {
	local why=$1 how=started
	if pidfile_alive "$KFAKE_PIDFILE" "$KFAKE_PATTERN" &&
		[[ $(cat "$KAFKA_DIR/kfake.addr" 2>/dev/null) == "$KAFKA_ADDR" ]] &&
		kafka_wait "$KAFKA_ADDR" 10s 2>/dev/null; then
		how=reused
	else
		stop_kfake >&2 || true
		if kafka_find_foreign; then
			kafka_use_foreign
			return
		fi
		kafka_ports_free
		start_background "$KFAKE_PIDFILE" "$KAFKA_DIR/kfake.log" \
			"$DTX_DEV_BIN" kafka --addr "$KAFKA_ADDR" ||
			die "the embedded Kafka broker did not start (see .dev/kafka/kfake.log)"
		echo "$KAFKA_ADDR" >"$KAFKA_DIR/kfake.addr"
		if ! kafka_wait_started "$KFAKE_PIDFILE" "$KFAKE_PATTERN" 20; then
			tail -n 20 "$KAFKA_DIR/kfake.log" >&2
			stop_kfake >&2 || true
			die "the embedded Kafka broker did not answer on $KAFKA_ADDR (see .dev/kafka/kfake.log)"
		fi
	fi
	kfake_warning "$why"
	DTX_KAFKA_BROKERS=$KAFKA_ADDR
	DTX_KAFKA_KIND=embedded-kfake
	echo "kafka: embedded development broker (franz-go kfake) at $KAFKA_ADDR ($how)"
}

# kafka_require_apache reports whether falling back to kfake is forbidden.
kafka_require_apache() {
	is_true "${CI:-}" || is_true "${DTX_REQUIRE_APACHE_KAFKA:-}" || [[ ${DTX_DEV_KAFKA:-} == apache ]]
}

kafka_require_apache_why() {
	if is_true "${CI:-}"; then
		echo "CI=$CI"
	elif is_true "${DTX_REQUIRE_APACHE_KAFKA:-}"; then
		echo "DTX_REQUIRE_APACHE_KAFKA=$DTX_REQUIRE_APACHE_KAFKA"
	else
		echo "DTX_DEV_KAFKA=apache"
	fi
}

# kafka_check_settings fails early on a setting kafka_up cannot follow.
kafka_check_settings() {
	case ${DTX_DEV_KAFKA:-} in
	"" | kfake | apache) ;;
	*) die "DTX_DEV_KAFKA=$DTX_DEV_KAFKA: want kfake (the embedded broker), apache, or unset" ;;
	esac
	if [[ ${DTX_DEV_KAFKA:-} == kfake && -z ${DTX_KAFKA_BROKERS:-} ]] && kafka_require_apache; then
		die "DTX_DEV_KAFKA=kfake asks for the embedded broker, but $(kafka_require_apache_why) requires Apache Kafka. Unset DTX_DEV_KAFKA."
	fi
	[[ $KAFKA_PORT =~ ^[0-9]+$ && $KAFKA_CONTROLLER_PORT =~ ^[0-9]+$ && $KAFKA_PORT != "$KAFKA_CONTROLLER_PORT" ]] ||
		die "DTX_DEV_KAFKA_PORT ($KAFKA_PORT) and DTX_DEV_KAFKA_CONTROLLER_PORT ($KAFKA_CONTROLLER_PORT) must be two different port numbers"
	[[ $KAFKA_SCRAM_PORT =~ ^[0-9]+$ && $KAFKA_SCRAM_PORT != "$KAFKA_PORT" && $KAFKA_SCRAM_PORT != "$KAFKA_CONTROLLER_PORT" ]] ||
		die "DTX_DEV_KAFKA_SCRAM_PORT ($KAFKA_SCRAM_PORT) must be a port number other than DTX_DEV_KAFKA_PORT and DTX_DEV_KAFKA_CONTROLLER_PORT"
	[[ $KAFKA_START_TIMEOUT =~ ^[0-9]+$ ]] ||
		die "DTX_DEV_KAFKA_START_TIMEOUT ($KAFKA_START_TIMEOUT) must be a number of seconds"
}

kafka_up() {
	kafka_check_settings
	if [[ -n ${DTX_KAFKA_BROKERS:-} ]]; then
		kafka_wait "$DTX_KAFKA_BROKERS" "${KAFKA_START_TIMEOUT}s" ||
			die "DTX_KAFKA_BROKERS ($DTX_KAFKA_BROKERS) cannot be used (see above); fix it, or unset it to run a local broker"
		DTX_KAFKA_KIND=external
		echo "kafka: external brokers at $DTX_KAFKA_BROKERS (DTX_KAFKA_BROKERS)"
		return
	fi
	mkdir -p "$KAFKA_DIR"

	if [[ ${DTX_DEV_KAFKA:-} == kfake ]]; then
		if stop_apache_kafka >/dev/null; then
			note "stopped our Apache Kafka broker to run the embedded one instead (DTX_DEV_KAFKA=kfake)"
		fi
		kfake_up "chosen with DTX_DEV_KAFKA=kfake."
		return
	fi

	if stop_kfake >/dev/null; then
		note "stopped our embedded Kafka broker to run Apache Kafka instead"
	fi
	KAFKA_FAIL_REASON=
	if apache_kafka_up; then
		return
	fi
	if kafka_require_apache; then
		die "Apache Kafka could not be started: $KAFKA_FAIL_REASON. $(kafka_require_apache_why) forbids falling back to the embedded broker."
	fi
	kfake_up "Apache Kafka could not be started: $KAFKA_FAIL_REASON."
}

# kafka_down stops our brokers; with "purge" it also deletes the broker data.
kafka_down() {
	stop_apache_kafka || true
	stop_kfake || true
	if [[ ${1:-} == purge && -d $KAFKA_DATA ]]; then
		rm -rf "$KAFKA_DATA" "$KAFKA_DIR/format.stamp"
		echo "removed .dev/kafka/data"
	fi
}
