#!/usr/bin/env bash
# make demo: runs the dtx binaries against the PostgreSQL and Kafka that
# scripts/deps.sh prepared (DTX_DATABASE_URL, DTX_KAFKA_BROKERS): creates their
# topics with `dtxctl topics apply`, shows each binary becoming ready, runs the
# outbox example and the Order-to-Cash sagas end to end (example-o2c:
# participants, place, report), places orders over the sales HTTP API
# (example-o2c sales-api and shop), then drains everything with SIGTERM.
# Every process exports its spans to a minimal OTLP collector (dtx-dev
# traces serve) unless OTEL_EXPORTER_OTLP_ENDPOINT names another; the demo
# prints one order's trace and checks that every record it left on its
# topics carries trace context. Exits non-zero if any step fails or the
# sagas' invariants do not hold.
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
sales_api="${DTX_DEMO_SALES_API:-127.0.0.1:8095}"
demo_started=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
binaries=(orchestrator outbox-relay projector example-o2c)
declare -A args=([example-o2c]=participants)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  for b in "${!pid[@]}"; do kill -9 "${pid[$b]}" 2>/dev/null || true; done
  [[ -z "${collector_pid:-}" ]] || kill -9 "$collector_pid" 2>/dev/null || true
}
trap cleanup EXIT

# Traces: without a collector of the user's own, a minimal one (dtx-dev
# traces serve) keeps every span in $logs/spans.jsonl.
spans="$logs/spans.jsonl"
collector_pid=""
if [[ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]]; then
  otlp_addr="${DTX_DEMO_OTLP_ADDR:-127.0.0.1:4318}"
  : >"$spans"
  bin/dtx-dev traces serve --addr "$otlp_addr" --file "$spans" >"$logs/collector.log" 2>&1 &
  collector_pid=$!
  deadline=$((SECONDS + 10))
  until grep -q "receiving OTLP/HTTP traces" "$logs/collector.log" 2>/dev/null; do
    if ! kill -0 "$collector_pid" 2>/dev/null || ((SECONDS > deadline)); then
      echo "the demo's trace collector (dtx-dev traces serve --addr $otlp_addr) did not start:" >&2
      cat "$logs/collector.log" >&2; exit 1
    fi
    sleep 0.1
  done
  export OTEL_EXPORTER_OTLP_ENDPOINT="http://$otlp_addr"
fi
export OTEL_BSP_SCHEDULE_DELAY="${OTEL_BSP_SCHEDULE_DELAY:-500}"

step "Kafka: ${DTX_KAFKA_KIND:-external} at $DTX_KAFKA_BROKERS; traces to $OTEL_EXPORTER_OTLP_ENDPOINT"
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

step "Order-to-Cash over HTTP: example-o2c sales-api at http://$sales_api, orders placed by example-o2c shop"
bin/example-o2c sales-api --addr "$sales_api" >"$logs/sales-api.log" 2>&1 &
pid[sales-api]=$!
deadline=$((SECONDS + 60))
until [[ "$(curl -sS -o /dev/null -w '%{http_code}' "http://$sales_api/orders/none" 2>/dev/null)" == 404 ]]; do
  if ! kill -0 "${pid[sales-api]}" 2>/dev/null || ((SECONDS > deadline)); then
    echo "the sales API did not start; its log:" >&2; cat "$logs/sales-api.log" >&2; exit 1
  fi
  sleep 0.2
done
shop_status=0
bin/example-o2c shop --api "http://$sales_api" --orders "${DTX_DEMO_SHOP_ORDERS:-8}" --wait "${DTX_DEMO_SAGA_WAIT:-45s}" 2>&1 \
  | tee "$logs/shop.txt" || shop_status=$?
trace_id=$(sed -n 's/^trace of .*: \([0-9a-f]\{32\}\)$/\1/p' "$logs/shop.txt")
binaries+=(sales-api)

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

step "Order-to-Cash over HTTP (example-o2c shop)"
sed -n '/^order /,$p' "$logs/shop.txt"
if [[ $shop_status -ne 0 ]]; then echo "demo FAILED: an order placed over HTTP did not end as expected (see above)" >&2; exit 1; fi

step "Trace context on every record the demo wrote (dtx-dev records)"
demo_topics=sales.orders,sales.events,inventory.commands,accounting.commands,delivery.commands,sales.commands,dtx.saga.replies,dtx.saga.events
demo_topics+=,sales.events.dlq,inventory.commands.dlq,accounting.commands.dlq,delivery.commands.dlq,sales.commands.dlq,dtx.saga.replies.dlq
bin/dtx-dev records --topics "$demo_topics" --since "$demo_started" --header ce_traceparent

if [[ -n "$collector_pid" ]]; then
  kill -TERM "$collector_pid"; wait "$collector_pid" || true; collector_pid=""
  step "One order's trace, as the collector received it (bin/dtx-dev traces show --file $spans --trace $trace_id)"
  bin/dtx-dev traces show --file "$spans" --trace "$trace_id"
else
  step "One order's trace: look up $trace_id in the collector at $OTEL_EXPORTER_OTLP_ENDPOINT"
fi
step "demo OK: the binaries started and became ready against PostgreSQL and Kafka, orders written in transactions reached Kafka through the relay, the Order-to-Cash sagas all ended with their invariants holding, orders placed over HTTP (one request repeated with its key) ended as expected, every record carried trace context, and everything drained"
