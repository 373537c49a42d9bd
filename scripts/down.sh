#!/usr/bin/env bash
# Stops what scripts/deps.sh started, and nothing else: our Kafka broker
# (Apache Kafka or the embedded one) and PostgreSQL only if deps.sh started
# it. Keeps the Kafka jars and data so the next deps.sh is fast.
#
# Usage: scripts/down.sh [--purge]
#   --purge  also delete the Kafka data (.dev/kafka/data)
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/postgres.sh
. "$DTX_ROOT/scripts/lib/postgres.sh"
# shellcheck source=scripts/lib/kafka.sh
. "$DTX_ROOT/scripts/lib/kafka.sh"

purge=
case ${1:-} in
"") ;;
--purge) purge=purge ;;
-h | --help)
	sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
	exit 0
	;;
*) die "unknown argument '$1' (usage: scripts/down.sh [--purge])" ;;
esac

[[ -d $DTX_DEV ]] || {
	echo "down: nothing to stop"
	exit 0
}
with_lock "${BASH_SOURCE[0]}" "$@"

out=$(
	kafka_down "$purge"
	postgres_down
)
# What .dev/env points at may be gone now; scripts/deps.sh writes it again.
rm -f "$DTX_DEV/env"
if [[ -n $out ]]; then
	printf '%s\n' "$out" | sed 's/^/down: /'
else
	echo "down: nothing to stop"
fi
