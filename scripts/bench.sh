#!/usr/bin/env bash
# make bench: Gavel's performance report, on this machine.
#
# 1. The engine alone: place-bid through the engine client vs `redis-benchmark` EVALSHA
#    of the same script on the same Redis (engine/benches/place_bid.rs).
# 2. The whole platform over real WebSockets (release builds of gavel-local, bid-api,
#    operator and the load generator `gavel-load`):
#      hot        one auction, 1,000 bidders bidding as fast as they can
#      hot-half   the same at half the rate reached by `hot` (latency at a sane load)
#      watchers   10,000 watchers on one auction receiving ~100 price updates per second
#      idle       20,000 mostly idle subscribed connections (bid-api memory per connection),
#                 from two load processes of 10,000 (one per bid-api: the per-process
#                 open-file limit here is 20,000)
#      probe      a well-behaved user's bid and GET /healthz, timed every 100 ms, alone and
#                 while 2,000 slow HTTP connections and 500 clients at 20 messages/s are
#                 held (one bid-api)
#    Every load run reports the CPU time (/proc/<pid>/stat) of each bid-api, Redis,
#    PostgreSQL (with its backends), the operator and the load generator itself, per
#    processed bid and per delivered frame. With BENCH_PIN=1 (the default on 2 cores or
#    more) the servers run on the first core(s) and the load generator on the last one
#    (taskset), so that it does not take the servers' CPU.
# Results: target/bench/*.json and *.svg, and target/bench/summary.md.
#      many       scripts/bench-many.py: CPU per process, operator memory and Redis
#                 commands/s with 0, 1,000 and 10,000 open auctions nobody bids on; close
#                 lag and CPU of 100, 1,000 and 10,000 auctions with the same endsAt;
#                 Redis memory per open auction, per bid in the replay window, and after
#                 the 10,000 closed auctions left Redis (retention 1s)
#      cluster    scripts/bench-cluster.py: 100 auctions, 300 bidders on all of them, on the
#                 single Redis and then on a second local platform whose Redis is a cluster
#                 of three masters: per Redis process, scripts/s, accepted bids/s of its own
#                 auctions, CPU, and live events sent over the cluster bus
# Knobs: BENCH_SECONDS (20), BENCH_BIDDERS (1000), BENCH_WATCHERS (10000), BENCH_IDLE (20000),
#        BENCH_MANY_IDLE (0,1000,10000), BENCH_MANY_STORM (100,1000,10000), BENCH_MANY_SAMPLE (20 s),
#        BENCH_CLUSTER_AUCTIONS (100), BENCH_CLUSTER_BIDDERS (300), BENCH_CLUSTER_SECONDS (10),
#        BENCH_PIN (1 on 2+ cores, 0 to share every core), BENCH_SCENARIOS (all: engine hot
#        watchers probe many cluster idle; hot-half always follows hot).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/bench
DIR=$OUT/platform
SECONDS_PER_RUN=${BENCH_SECONDS:-20}
BIDDERS=${BENCH_BIDDERS:-1000}
WATCHERS=${BENCH_WATCHERS:-10000}
IDLE=${BENCH_IDLE:-20000}
SCENARIOS=${BENCH_SCENARIOS:-engine hot watchers probe many cluster idle}
CORES=$(nproc)
PIN=${BENCH_PIN:-$([ "$CORES" -ge 2 ] && echo 1 || echo 0)}
mkdir -p "$OUT"
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }

echo "== building release binaries"
cargo build --release --locked -p gavel-bid-api -p gavel-operator -p gavel-cli -p gavel-loadgen

if want engine; then
  echo "== engine: place-bid throughput, engine client vs raw EVALSHA"
  cargo bench --locked -p gavel-engine --bench place_bid
fi

echo "== starting the local platform (release builds)"
# The load generator is one client machine's worth of users: lift the per-connection
# message limits that protect the servers from a single abusive client.
export GAVEL_LOCAL_BID_API_ARGS="--messages-per-second 1000000 --message-burst 1000000 --max-connections-per-ip 0 --upgrades-per-ip-per-second 1000000 --upgrade-burst 1000000"
export GAVEL_BIN_DIR=$PWD/target/release
target/release/gavel-local down --dir "$DIR" >/dev/null 2>&1 || true
target/release/gavel-local up --dir "$DIR"
trap 'target/release/gavel-local down --dir "$DIR" >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "$DIR/env"
IFS=, read -r -a WS <<<"$GAVEL_WS_URLS"
# The bid-api processes: the ones listening on the ports of the WebSocket URLs.
PIDS=()
for url in "${WS[@]}"; do
  port=${url##*:}; port=${port%%/*}
  pid=$(ss -ltnpH "sport = :$port" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n 1)
  PIDS+=("$pid")
done
echo "bid-api processes: ${PIDS[*]} at ${WS[*]}"
pid_on() {
  local url=${1##*@}; local port=${url##*:}; port=${port%%/*}
  ss -ltnpH "sport = :$port" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n 1
}
REDIS_PID=$(pid_on "$GAVEL_REDIS_URL")
PG_PID=$(pid_on "$GAVEL_DATABASE_URL")
OPERATOR_PID=$(pid_on "$GAVEL_OPERATOR_URL")
CPU_PIDS="redis=$REDIS_PID,postgres=$PG_PID,operator=$OPERATOR_PID"
for i in "${!PIDS[@]}"; do CPU_PIDS+=",bid-api=${PIDS[$i]}"; done
# Pinning: the servers (and PostgreSQL's backends) on every core but the last, the load
# generator on the last one.
LOADGEN_CPUS=$((CORES - 1))
SERVER_CPUS=0-$((CORES > 1 ? CORES - 2 : 0))
pin_servers() {
  [ "$PIN" = 1 ] || return 0
  local pid
  for pid in "${PIDS[@]}" "$REDIS_PID" "$OPERATOR_PID" "$PG_PID" $(pgrep -P "$PG_PID"); do
    taskset -a -cp "$SERVER_CPUS" "$pid" >/dev/null || true
  done
}
pin_servers
if [ "$PIN" = 1 ]; then
  echo "pinned: servers on CPU $SERVER_CPUS, load generator on CPU $LOADGEN_CPUS"
  PIN_LOAD=(taskset -c "$LOADGEN_CPUS")
else
  PIN_LOAD=()
fi

load() {
  pin_servers # PostgreSQL may have started backends since
  "${PIN_LOAD[@]}" target/release/gavel-load --out-dir "$OUT" --redis-url "$GAVEL_REDIS_URL" \
    --cpu-pids "$CPU_PIDS" "$@"
}
ALL_URLS=$GAVEL_WS_URLS
ALL_PIDS=$(IFS=,; echo "${PIDS[*]}")

if want hot; then
echo "== hot: one auction, $BIDDERS bidders, as fast as possible"
load --scenario hot --ws-urls "$ALL_URLS" --server-pids "$ALL_PIDS" --provision \
  --auctions bench/hot --bidders "$BIDDERS" --duration "${SECONDS_PER_RUN}s"

# The flushers' lag (acceptance in Redis to commit in PostgreSQL) during hot-half, from the
# gavel_flush_lag_seconds histograms of every process that flushes (the bid-apis and the
# operator): scraped before and after, the difference is the run's own distribution.
METRICS_URLS="$GAVEL_HTTP_URLS,$GAVEL_OPERATOR_URL"
scrape_flush_lag() { python3 scripts/flush-lag.py scrape "$METRICS_URLS" > "$OUT/$1"; }

half=$(python3 -c "import json; r=json.load(open('$OUT/hot.json')); print(max(1, int((r['accepted'] + sum(r['rejected'].values())) / r['duration_s'] / 2)))")
echo "== hot-half: the same at $half bids/s (half of what hot reached)"
scrape_flush_lag flush-lag-before.json
load --scenario hot-half --ws-urls "$ALL_URLS" --server-pids "$ALL_PIDS" --provision \
  --auctions bench/hot-half --bidders "$BIDDERS" --rate "$half" --duration "${SECONDS_PER_RUN}s"
sleep 2   # the last bids' commits
scrape_flush_lag flush-lag-after.json
python3 scripts/flush-lag.py diff "$OUT/flush-lag-before.json" "$OUT/flush-lag-after.json" > "$OUT/flush-lag.json"
fi

if want watchers; then
echo "== watchers: $WATCHERS watchers, ~100 price updates per second"
load --scenario watchers --ws-urls "$ALL_URLS" --server-pids "$ALL_PIDS" --provision \
  --auctions bench/watched --bidders 20 --rate 100 --watchers "$WATCHERS" \
  --duration "${SECONDS_PER_RUN}s"
fi

if want probe; then
echo "== probe: a bid and GET /healthz every 100 ms, alone, then under 2,000 slow connections and 500 busy clients"
load --scenario probe-quiet --ws-urls "${WS[0]}" --server-pids "${PIDS[0]}" --provision \
  --auctions bench/probe --bidders 0 --probe --duration 10s
load --scenario probe --ws-urls "${WS[0]}" --server-pids "${PIDS[0]}" --provision \
  --auctions bench/probe --bidders 0 --probe --slow 2000 --chatty 500 --chatty-rate 20 \
  --duration "${SECONDS_PER_RUN}s"
fi

if want many; then
echo "== many auctions: idle cost at ${BENCH_MANY_IDLE:-0,1000,10000} open auctions, close storms of ${BENCH_MANY_STORM:-100,1000,10000}, Redis memory"
python3 scripts/bench-many.py --env "$DIR/env" --out "$OUT" --load target/release/gavel-load \
  --idle "${BENCH_MANY_IDLE:-0,1000,10000}" --storm "${BENCH_MANY_STORM:-100,1000,10000}" --sample "${BENCH_MANY_SAMPLE:-20}"
fi

if want cluster; then
echo "== cluster: ${BENCH_CLUSTER_AUCTIONS:-100} auctions on one Redis, then on a Redis Cluster of three masters"
python3 scripts/bench-cluster.py --single-env "$DIR/env" --cluster-dir "$OUT/cluster-platform" \
  --gavel-local target/release/gavel-local --load target/release/gavel-load --out "$OUT" \
  --auctions "${BENCH_CLUSTER_AUCTIONS:-100}" --bidders "${BENCH_CLUSTER_BIDDERS:-300}" \
  --seconds "${BENCH_CLUSTER_SECONDS:-10}"
fi

if want idle; then
echo "== idle: $IDLE subscribed connections"
per=$((IDLE / ${#WS[@]}))
for i in "${!WS[@]}"; do
  load --scenario "idle-$i" --ws-urls "${WS[$i]}" --server-pids "${PIDS[$i]}" --provision \
    --auctions bench/quiet --bidders 0 --idle "$per" --duration 10s &
done
wait
fi

python3 scripts/bench-summary.py "$OUT" "$PIN" "$(cat /proc/loadavg)"
