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
#        BENCH_CLUSTER_AUCTIONS (100), BENCH_CLUSTER_BIDDERS (300), BENCH_CLUSTER_SECONDS (10).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/bench
DIR=$OUT/platform
SECONDS_PER_RUN=${BENCH_SECONDS:-20}
BIDDERS=${BENCH_BIDDERS:-1000}
WATCHERS=${BENCH_WATCHERS:-10000}
IDLE=${BENCH_IDLE:-20000}
mkdir -p "$OUT"

echo "== building release binaries"
cargo build --release --locked -p gavel-bid-api -p gavel-operator -p gavel-cli -p gavel-loadgen

echo "== engine: place-bid throughput, engine client vs raw EVALSHA"
cargo bench --locked -p gavel-engine --bench place_bid

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

load() { target/release/gavel-load --out-dir "$OUT" --redis-url "$GAVEL_REDIS_URL" "$@"; }
ALL_URLS=$GAVEL_WS_URLS
ALL_PIDS=$(IFS=,; echo "${PIDS[*]}")

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

echo "== watchers: $WATCHERS watchers, ~100 price updates per second"
load --scenario watchers --ws-urls "$ALL_URLS" --server-pids "$ALL_PIDS" --provision \
  --auctions bench/watched --bidders 20 --rate 100 --watchers "$WATCHERS" \
  --duration "${SECONDS_PER_RUN}s"

echo "== many auctions: idle cost at ${BENCH_MANY_IDLE:-0,1000,10000} open auctions, close storms of ${BENCH_MANY_STORM:-100,1000,10000}, Redis memory"
python3 scripts/bench-many.py --env "$DIR/env" --out "$OUT" --load target/release/gavel-load \
  --idle "${BENCH_MANY_IDLE:-0,1000,10000}" --storm "${BENCH_MANY_STORM:-100,1000,10000}" --sample "${BENCH_MANY_SAMPLE:-20}"

echo "== cluster: ${BENCH_CLUSTER_AUCTIONS:-100} auctions on one Redis, then on a Redis Cluster of three masters"
python3 scripts/bench-cluster.py --single-env "$DIR/env" --cluster-dir "$OUT/cluster-platform" \
  --gavel-local target/release/gavel-local --load target/release/gavel-load --out "$OUT" \
  --auctions "${BENCH_CLUSTER_AUCTIONS:-100}" --bidders "${BENCH_CLUSTER_BIDDERS:-300}" \
  --seconds "${BENCH_CLUSTER_SECONDS:-10}"

echo "== idle: $IDLE subscribed connections"
per=$((IDLE / ${#WS[@]}))
for i in "${!WS[@]}"; do
  load --scenario "idle-$i" --ws-urls "${WS[$i]}" --server-pids "${PIDS[$i]}" --provision \
    --auctions bench/quiet --bidders 0 --idle "$per" --duration 10s &
done
wait

python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
load = lambda name: json.load(open(os.path.join(out, name)))
engine = load("engine.json")
raw = engine["raw_evalsha_per_second"]
rows = []
def processed(r):
    return (r["accepted"] + sum(r["rejected"].values())) / r["duration_s"]
for name in ["hot", "hot-half", "watchers"]:
    r = load(name + ".json")
    rows.append((name, r))
lag = load("flush-lag.json")
idle = [load(f) for f in sorted(os.listdir(out)) if f.startswith("idle-") and f.endswith(".json")]
lines = ["# Gavel performance (make bench)", "",
         f"Machine: {os.cpu_count()} cores; Redis, bid-api processes and load generator share it.", "",
         f"- raw `redis-benchmark` EVALSHA of the place-bid script: {raw:,.0f}/s "
         f"(pipelined: {engine['raw_evalsha_pipelined_per_second']:,.0f}/s)",
         f"- engine client, {engine['callers']} callers, the same call: {engine['engine_bids_per_second']:,.0f}/s "
         f"({engine['ratio']*100:.0f}% of raw EVALSHA)",
         f"- engine client, accepted bids (a new leader each time): {engine['accepted_bids_per_second']:,.0f}/s; "
         f"CPU per bid: Redis {engine['redis_cpu_us_per_bid']:.1f} µs, client {engine['client_cpu_us_per_bid']:.1f} µs",
         *[f"- the same on Redis with AOF `appendfsync {a['appendfsync']}`: {a['engine_bids_per_second']:,.0f} accepted bids/s "
           f"({a['engine_bids_per_second']/engine['accepted_bids_per_second']*100:.0f}% of no persistence); "
           f"CPU per bid: Redis {a['redis_cpu_us_per_bid']:.1f} µs, client {a['client_cpu_us_per_bid']:.1f} µs"
           for a in engine.get("aof", [])],
         f"- flush lag during hot-half (acceptance in Redis to commit in PostgreSQL, {lag['count']:,} events): "
         f"p50 ≤ {lag['p50_le_ms']} ms, p99 ≤ {lag['p99_le_ms']} ms, p99.9 ≤ {lag['p999_le_ms']} ms", "",
         "| scenario | connections | bids processed/s | accepted/s | % of raw EVALSHA (processed) | bid→result p50 / p99 / p99.9 ms | bid→price p50 / p99 / p99.9 ms | lost / out of order |",
         "|---|---|---|---|---|---|---|---|"]
for name, r in rows:
    l, b = r["bid_result_latency"], r["broadcast_latency"]
    bcast = f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f} / {b['p999_ms']:.1f}" if b["count"] else "–"
    lines.append(f"| {name} | {r['connections_held']} | {processed(r):,.0f} | {r['accepted_per_s']:,.0f} | "
                 f"{processed(r)/raw*100:.0f}% | {l['p50_ms']:.1f} / {l['p99_ms']:.1f} / {l['p999_ms']:.1f} | {bcast} | "
                 f"{r['events_lost']} / {r['events_out_of_order']} |")
if idle:
    held = sum(r["connections_held"] for r in idle)
    per = [r["server_bytes_per_connection"] for r in idle if r["server_bytes_per_connection"]]
    lines += ["", f"Idle connections held: {held}; bid-api memory per idle connection: "
              + ", ".join(f"{p/1024:.1f} KiB" for p in per)]
for part in ["many.md", "cluster.md"]:
    if os.path.exists(os.path.join(out, part)):
        lines += ["", open(os.path.join(out, part)).read().rstrip()]
text = "\n".join(lines) + "\n"
open(os.path.join(out, "summary.md"), "w").write(text)
print(text)
EOF
