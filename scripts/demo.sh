#!/usr/bin/env bash
# make demo: runs the dtx binaries against the PostgreSQL and Kafka that
# scripts/deps.sh prepared (DTX_DATABASE_URL, DTX_KAFKA_BROKERS): creates their
# topics with `dtxctl topics apply`, shows each binary becoming ready, runs the
# outbox example and the Order-to-Cash sagas end to end (example-o2c:
# participants, place, report), then drains everything with SIGTERM. Exits non-zero if any step fails or the sagas' invariants do not hold.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DTX_DATABASE_URL:?run make demo (it prepares the environment), or set DTX_DATABASE_URL}"
: "${DTX_KAFKA_BROKERS:?run make demo (it prepares the environment), or set DTX_KAFKA_BROKERS}"
export DTX_LOG_FORMAT="${DTX_LOG_FORMAT:-text}"
export DTX_DEFINITIONS="${DTX_DEFINITIONS:-examples/order-to-cash/sagas}"
# The topics are provisioned below with dtxctl topics apply; a binary that
# still finds one missing creates it rather than wait (development only:
# deploy/k8s keeps this off).
export DTX_CREATE_TOPICS="${DTX_CREATE_TOPICS:-true}"

logs=.dev/demo
mkdir -p "$logs"
declare -A port=([orchestrator]=8081 [outbox-relay]=8082 [projector]=8083 [example-o2c]=8090)
declare -A pid=()
binaries=(orchestrator outbox-relay projector example-o2c)
declare -A args=([example-o2c]=participants)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  for b in "${!pid[@]}"; do kill -9 "${pid[$b]}" 2>/dev/null || true; done
}
trap cleanup EXIT

step "Kafka: ${DTX_KAFKA_KIND:-external} at $DTX_KAFKA_BROKERS"
step "Migrations (dtxctl migrate up, then status)"
bin/dtxctl migrate up
bin/dtxctl migrate status

step "Topics (dtxctl topics apply: the saga definitions' topics and examples/order-to-cash/topics.yaml)"
# Provisioned before anything starts, never auto-created: a consumer that
# starts before its topic exists would wait, and one reading from the end of
# a topic that a first write creates would miss what was written before it.
topics_args=(--definitions "$DTX_DEFINITIONS" --file examples/order-to-cash/topics.yaml)
bin/dtxctl topics apply "${topics_args[@]}"

step "Starting ${binaries[*]}"
for b in "${binaries[@]}"; do
  DTX_ADMIN_ADDR="127.0.0.1:${port[$b]}" "bin/$b" ${args[$b]:-} >"$logs/$b.log" 2>&1 &
  pid[$b]=$!
  echo "$b: pid ${pid[$b]}, admin http://127.0.0.1:${port[$b]}, log $logs/$b.log"
done

step "Waiting for /readyz (PostgreSQL and Kafka must answer, the topics must exist)"
for b in "${binaries[@]}"; do
  deadline=$((SECONDS + 60))
  until body=$(curl -fsS "http://127.0.0.1:${port[$b]}/readyz" 2>/dev/null); do
    if ! kill -0 "${pid[$b]}" 2>/dev/null; then
      echo "$b exited during start-up; its log:" >&2; cat "$logs/$b.log" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "$b not ready after 60s; /readyz says:" >&2
      curl -sS "http://127.0.0.1:${port[$b]}/readyz" >&2 || true
      cat "$logs/$b.log" >&2; exit 1
    fi
    sleep 0.2
  done
  echo "$b ready: $body"
done

step "Metrics (excerpt of /metrics)"
for b in "${binaries[@]}"; do
  curl -fsS "http://127.0.0.1:${port[$b]}/metrics" | grep -E '^dtx_(build_info|dependency_up)' | sed "s/^/$b: /"
done

step "Outbox: orders committed in transactions reach Kafka through the outbox-relay"
bin/example-outbox --orders "${DTX_DEMO_ORDERS:-1000}" --per-tx 10
curl -fsS "http://127.0.0.1:${port[outbox-relay]}/metrics" | grep -E '^dtx_relay_(published_total|is_leader)' | sed "s/^/outbox-relay: /"

step "Order-to-Cash: sagas across inventory, accounting, delivery and sales (example-o2c)"
o2c_run="demo$(date +%s)"
bin/example-o2c place --run "$o2c_run" --orders "${DTX_DEMO_SAGAS:-200}" --per-tx 10 \
  --decline-every 5 --sold-out-every 23 --fail-delivery-every 17
o2c_status=0
bin/example-o2c report --run "$o2c_run" --wait "${DTX_DEMO_SAGA_WAIT:-45s}" 2>&1 | tee "$logs/o2c-report.txt" || o2c_status=$?
curl -fsS "http://127.0.0.1:${port[orchestrator]}/metrics" | grep -E '^dtx_saga_(lifecycle_total|inputs_total)' | sed "s/^/orchestrator: /" || true

step "Draining with SIGTERM"
status=0
for b in "${binaries[@]}"; do kill -TERM "${pid[$b]}"; done
for b in "${binaries[@]}"; do
  start=$SECONDS
  if wait "${pid[$b]}"; then code=0; else code=$?; fi
  unset "pid[$b]"
  echo "$b exited with code $code after $((SECONDS - start))s"
  [[ $code -eq 0 ]] || status=1
done

step "Logs"
for b in "${binaries[@]}"; do sed "s/^/$b | /" "$logs/$b.log"; done

if [[ $status -ne 0 ]]; then echo "demo FAILED: a binary did not drain cleanly" >&2; exit 1; fi
step "Order-to-Cash report (run $o2c_run)"
sed -n '/^Order-to-Cash run/,$p' "$logs/o2c-report.txt"
if [[ $o2c_status -ne 0 ]]; then echo "demo FAILED: the Order-to-Cash report found broken invariants (see above)" >&2; exit 1; fi
step "demo OK: the binaries started and became ready against PostgreSQL and Kafka, orders written in transactions reached Kafka through the relay, the Order-to-Cash sagas all ended with their invariants holding, and everything drained"
