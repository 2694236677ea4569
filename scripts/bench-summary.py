#!/usr/bin/env python3
"""make bench: target/bench/summary.md from the JSON results of scripts/bench.sh.

Usage: bench-summary.py <out dir> <pinned: 1|0> <load average text>
Every part is optional: a scenario that was not run (BENCH_SCENARIOS) is left out.
"""
import json
import os
import sys

out, pinned, loadavg = sys.argv[1], sys.argv[2] == "1", sys.argv[3]


def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None


def processed(r):
    return (r["accepted"] + sum(r["rejected"].values())) / r["duration_s"]


def fmt(v):
    return "–" if v is None else f"{v:.1f}"


engine = load("engine.json")
raw = engine["raw_evalsha_per_second"] if engine else None
rows = [(n, r) for n in ["hot", "hot-half", "watchers"] if (r := load(n + ".json"))]
lag = load("flush-lag.json")
idle = [load(f) for f in sorted(os.listdir(out)) if f.startswith("idle-") and f.endswith(".json")]
where = ("servers pinned to the first core(s), the load generator to the last (taskset)" if pinned
         else "Redis, PostgreSQL, bid-api processes, operator and load generator share every core")
lines = ["# Gavel performance (make bench)", "",
         f"Machine: {os.cpu_count()} cores; {where}; load average at the end: {loadavg}.", ""]
if engine:
    lines += [
        f"- raw `redis-benchmark` EVALSHA of the place-bid script: {raw:,.0f}/s "
        f"(pipelined: {engine['raw_evalsha_pipelined_per_second']:,.0f}/s)",
        f"- engine client, {engine['callers']} callers, the same call: {engine['engine_bids_per_second']:,.0f}/s "
        f"({engine['ratio']*100:.0f}% of raw EVALSHA)",
        f"- engine client, accepted bids (a new leader each time): {engine['accepted_bids_per_second']:,.0f}/s; "
        f"CPU per bid: Redis {engine['redis_cpu_us_per_bid']:.1f} µs, client {engine['client_cpu_us_per_bid']:.1f} µs",
        *[f"- the same on Redis with AOF `appendfsync {a['appendfsync']}`: {a['engine_bids_per_second']:,.0f} accepted bids/s "
          f"({a['engine_bids_per_second']/engine['accepted_bids_per_second']*100:.0f}% of no persistence); "
          f"CPU per bid: Redis {a['redis_cpu_us_per_bid']:.1f} µs, client {a['client_cpu_us_per_bid']:.1f} µs"
          for a in engine.get("aof", [])]]
if lag:
    lines.append(f"- flush lag during hot-half (acceptance in Redis to commit in PostgreSQL, {lag['count']:,} events): "
                 f"p50 ≤ {lag['p50_le_ms']} ms, p99 ≤ {lag['p99_le_ms']} ms, p99.9 ≤ {lag['p999_le_ms']} ms")
if rows:
    lines += ["",
              "| scenario | connections | bids processed/s | accepted/s | % of raw EVALSHA (processed) | "
              "bid→result p50 / p99 / p99.9 ms | bid→price p50 / p99 / p99.9 ms | lost / out of order |",
              "|---|---|---|---|---|---|---|---|"]
for name, r in rows:
    lat, b = r["bid_result_latency"], r["broadcast_latency"]
    bcast = f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f} / {b['p999_ms']:.1f}" if b["count"] else "–"
    ratio = f"{processed(r)/raw*100:.0f}%" if raw else "–"
    lines.append(f"| {name} | {r['connections_held']} | {processed(r):,.0f} | {r['accepted_per_s']:,.0f} | "
                 f"{ratio} | {lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} / {lat['p999_ms']:.1f} | {bcast} | "
                 f"{r['events_lost']} / {r['events_out_of_order']} |")
cpu_rows = [(n, r) for n, r in rows if r.get("cpu")]
if cpu_rows:
    names = sorted({p for _, r in cpu_rows for p in r["cpu"]})
    lines += ["", "CPU µs per processed bid / per delivered frame (`price` frames and bid replies), and % of one "
              "core, over each run's bidding window (`/proc/<pid>/stat`; the bid-apis summed, PostgreSQL with "
              "its backends):", "",
              "| scenario | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for name, r in cpu_rows:
        cells = []
        for p in names:
            c = r["cpu"].get(p)
            cells.append("–" if c is None else
                         f"{fmt(c['us_per_bid'])} / {fmt(c['us_per_frame'])} ({c['core_percent']:.0f}%)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
probes = [(n, r) for n in ["probe-quiet", "probe"] if (r := load(n + ".json")) and r.get("probe")]
if probes:
    lines += ["", "| probe: a bid and `GET /healthz` every 100 ms | bid→result p50 / p99 / max ms | "
              "/healthz p50 / p99 / max ms | failed |", "|---|---|---|---|"]
    for name, r in probes:
        p = r["probe"]
        what = "alone" if name == "probe-quiet" else "2,000 slow HTTP connections and 500 clients at 20 messages/s held"
        lines.append(f"| {what} | {p['bid']['p50_ms']:.1f} / {p['bid']['p99_ms']:.1f} / {p['bid']['max_ms']:.1f} | "
                     f"{p['health']['p50_ms']:.1f} / {p['health']['p99_ms']:.1f} / {p['health']['max_ms']:.1f} | "
                     f"{p['failed']} |")
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
