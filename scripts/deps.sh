#!/usr/bin/env bash
# Prepares PostgreSQL and Kafka for tests and the demo, then writes .dev/env
# with DTX_DATABASE_URL, DTX_KAFKA_BROKERS and DTX_KAFKA_KIND. Idempotent:
# what already runs is reused. scripts/down.sh stops what this started.
#
# PostgreSQL: DTX_DATABASE_URL if set; else the local Debian cluster (started
# if down, installed with apt-get when root on Debian), with role and
# database dtx (password dtx); else `docker compose up -d postgres`.
#
# Kafka: DTX_KAFKA_BROKERS if set; else Apache Kafka (KRaft, single node,
# jars fetched by Maven into .dev/kafka, run with Java 17+); else the
# embedded development broker, with a warning. A broker that deps.sh started
# from another checkout on the same port is reused, never replaced.
#
# Settings:
#   DTX_DATABASE_URL, DTX_KAFKA_BROKERS  use these services as they are
#   DTX_DEV_KAFKA=kfake                  use the embedded broker on purpose
#   DTX_DEV_KAFKA=apache                 Apache Kafka or fail
#   CI=true, DTX_REQUIRE_APACHE_KAFKA=1  Apache Kafka or fail
#   DTX_DEV_KAFKA_PORT (9092), DTX_DEV_KAFKA_CONTROLLER_PORT (9093)
#   DTX_DEV_KAFKA_SCRAM_PORT (9094)     Apache Kafka's SASL SCRAM listener; its
#                                        address, user and password file go in
#                                        .dev/env as DTX_DEV_KAFKA_SCRAM_*
#   DTX_DEV_KAFKA_START_TIMEOUT          seconds to wait for the broker (90)
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/postgres.sh
. "$DTX_ROOT/scripts/lib/postgres.sh"
# shellcheck source=scripts/lib/kafka.sh
. "$DTX_ROOT/scripts/lib/kafka.sh"

with_lock "${BASH_SOURCE[0]}" "$@"

kafka_check_settings
# A failed run must not leave the previous run's answer behind.
rm -f "$DTX_DEV/env"
build_dtx_dev
postgres_up
kafka_up

write_env_file "$DTX_DEV/env" \
	"DTX_DATABASE_URL=$DTX_DATABASE_URL" \
	"DTX_KAFKA_BROKERS=$DTX_KAFKA_BROKERS" \
	"DTX_KAFKA_KIND=$DTX_KAFKA_KIND" \
	${DTX_DEV_KAFKA_SCRAM_BROKERS:+"DTX_DEV_KAFKA_SCRAM_BROKERS=$DTX_DEV_KAFKA_SCRAM_BROKERS"} \
	${DTX_DEV_KAFKA_SCRAM_BROKERS:+"DTX_DEV_KAFKA_SCRAM_USERNAME=$DTX_DEV_KAFKA_SCRAM_USERNAME"} \
	${DTX_DEV_KAFKA_SCRAM_BROKERS:+"DTX_DEV_KAFKA_SCRAM_PASSWORD_FILE=$DTX_DEV_KAFKA_SCRAM_PASSWORD_FILE"}
note "wrote .dev/env (load it with: . .dev/env)"
