#!/usr/bin/env python3
"""make bench, "many auctions": what open auctions cost at rest, and how late a close storm
closes, on a running local platform (`gavel-local up`: standalone operator, bid-apis,
Redis, PostgreSQL).

- idle: N open auctions nobody bids on (manifests ending in two hours); once they are all
  open, CPU of each process from /proc/<pid>/stat (utime + stime, PostgreSQL with its
  backends), resident memory of each, and Redis commands/s over --sample seconds.
- storm: M auctions with the same endsAt; close lag = status closedAt − endsAt (the
  close script's Redis time), and recorded lag = the ResultRecorded condition's
  lastTransitionTime (the result is in PostgreSQL) − endsAt; p50 / p99 / max; the CPU
  seconds of each process while provisioning, until all are closed and recorded, and
  until their keys left Redis (retention 1s); Redis commands per auction; Redis memory
  before and after. Each row has the load average it was measured at (a shared machine
  moves the wall-clock figures, much less the CPU seconds).

Usage: bench-many.py --env .gavel/env [--idle 0,1000,10000] [--storm 100,1000,10000]
                     [--sample 20] [--out target/bench]
Writes <out>/many.json and prints a Markdown summary (also <out>/many.md).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime

TICK = os.sysconf("SC_CLK_TCK")


def read_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            env[k.removeprefix("export ").strip()] = v.strip().strip("'\"")
    return env


def port_of(url):
    m = re.search(r":(\d+)(/|$)", url.split("@")[-1])
    return int(m.group(1))


def pid_on(port):
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    m = re.search(r"pid=(\d+)", out)
    if not m:
        sys.exit(f"no process listens on port {port}")
    return int(m.group(1))


def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree_ticks(root):
    """CPU ticks of `root` and its live children (PostgreSQL's backends)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid, ticks = stat(int(entry))
        except (OSError, IndexError, ValueError):
            continue
        if int(entry) == root or ppid == root:
            total += ticks
    return total


def rss_kib(pid):
    """Resident memory of `pid` (VmRSS), KiB."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def redis_commands(url):
    out = subprocess.run(["redis-cli", "-u", url, "info", "stats"], capture_output=True, text=True).stdout
    m = re.search(r"total_commands_processed:(\d+)", out)
    return int(m.group(1)) if m else 0


def redis_info(url, field):
    out = subprocess.run(["redis-cli", "-u", url, "info"], capture_output=True, text=True).stdout
    m = re.search(rf"^{field}:(\S+)", out, re.M)
    return m.group(1) if m else None


def iso(ms):
    return datetime.utcfromtimestamp(ms / 1000).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_ms(text):
    text = text.strip().strip("'\"")
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def manifest(name, ends_at_ms, retention=None):
    return (
        "apiVersion: gavel.dev/v1alpha1\nkind: Auction\n"
        f"metadata:\n  name: {name}\n  namespace: bench\n"
        f"spec:\n  title: \"{name}\"\n  currency: EUR\n  startingPrice: 100\n"
        f"  increments:\n  - from: 0\n    step: 10\n  endsAt: \"{iso(ends_at_ms)}\"\n"
        + (f"  retention: {retention}\n" if retention else "")
    )


def redis_keys(url):
    out = subprocess.run(["redis-cli", "-u", url, "dbsize"], capture_output=True, text=True).stdout
    return int(out.strip() or 0)


def used_memory(url):
    return int(redis_info(url, "used_memory") or 0)


def write(dir_, name, text):
    path = os.path.join(dir_, f"bench_{name}.yaml")
    tmp = os.path.join(dir_, f".bench_{name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)
    return path


def status(path):
    try:
        text = open(path + ".status.yaml").read()
    except OSError:
        return None
    phase = re.search(r"^phase: (\w+)", text, re.M)
    closed = re.search(r"^closedAt: (.+)$", text, re.M)
    return {
        "phase": phase.group(1) if phase else None,
        "closed_at": parse_ms(closed.group(1)) if closed else None,
        "recorded_at": recorded_at(text),
        "mtime_ms": int(os.stat(path + ".status.yaml").st_mtime * 1000),
    }


def recorded_at(text):
    """When the operator saw the result recorded: the ResultRecorded condition's
    lastTransitionTime (the file's time would be that of a later write, e.g. when the
    auction left Redis at the end of its retention)."""
    for item in re.split(r"^- ", text.split("\nconditions:\n", 1)[-1], flags=re.M)[1:]:
        if re.search(r"^\s*type: ResultRecorded\s*$", item, re.M) and re.search(r"^\s*status: '?True'?\s*$", item, re.M):
            at = re.search(r"^\s*lastTransitionTime: (.+)$", item, re.M)
            return parse_ms(at.group(1)) if at else None
    return None


def wait_for(paths, phases, timeout):
    deadline = time.time() + timeout
    pending = list(paths)
    while True:
        # Only those not there yet are read again (10,000 status files per look is work).
        pending = [p for p in pending if (status(p) or {}).get("phase") not in phases]
        if not pending:
            return
        if time.time() > deadline:
            sys.exit(f"{len(pending)} of {len(paths)} auctions not {phases} after {timeout}s (e.g. {pending[0]})")
        time.sleep(0.5)


def remove(paths, timeout=300):
    for p in paths:
        try:
            os.remove(p)
        except OSError:
            pass
    deadline = time.time() + timeout
    while any(os.path.exists(p + ".status.yaml") for p in paths):
        if time.time() > deadline:
            sys.exit("removed auctions were not cleaned up in time")
        time.sleep(0.5)


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", required=True)
    ap.add_argument("--idle", default="0,1000")
    ap.add_argument("--storm", default="100,500")
    ap.add_argument("--sample", type=float, default=20.0)
    ap.add_argument("--out", default="target/bench")
    ap.add_argument("--label", default="")
    ap.add_argument("--load", help="gavel-load binary: also measure Redis memory per bid in the window")
    ap.add_argument("--bids", type=int, default=800, help="bids for the per-bid memory figure (below the replay window)")
    args = ap.parse_args()
    env = read_env(args.env)
    manifests = env["GAVEL_MANIFESTS"]
    procs = {"operator": pid_on(port_of(env["GAVEL_OPERATOR_URL"]))}
    for i, url in enumerate(env["GAVEL_HTTP_URLS"].split(",")):
        procs[f"bid-api-{i + 1}"] = pid_on(port_of(url))
    procs["redis"] = pid_on(port_of(env["GAVEL_REDIS_URL"]))
    procs["postgres"] = pid_on(port_of(env["GAVEL_DATABASE_URL"]))
    redis_url = env["GAVEL_REDIS_URL"]
    result = {"label": args.label, "cores": os.cpu_count(), "idle": [], "storm": [], "memory": {}}
    memory = result["memory"]
    # Names of this run only: a name used before has its record in PostgreSQL already.
    run = f"{int(time.time()) % 100000:05d}"
    memory["baseline_bytes"] = used_memory(redis_url)
    memory["baseline_keys"] = redis_keys(redis_url)

    idle_paths = []
    for n in [int(x) for x in args.idle.split(",") if x]:
        ends = int(time.time() * 1000) + 2 * 3600 * 1000
        started = time.time()
        while len(idle_paths) < n:
            name = f"idle-{run}-{len(idle_paths):05d}"
            idle_paths.append(write(manifests, name, manifest(name, ends)))
        wait_for(idle_paths, {"Open"}, 120 + n / 10)
        provisioned_in = time.time() - started
        time.sleep(8)  # past one status refresh after provisioning
        before = {k: tree_ticks(p) for k, p in procs.items()}
        c0, t0 = redis_commands(redis_url), time.time()
        time.sleep(args.sample)
        after = {k: tree_ticks(p) for k, p in procs.items()}
        c1, t1 = redis_commands(redis_url), time.time()
        cpu = {k: (after[k] - before[k]) / TICK / (t1 - t0) * 100 for k in procs}
        row = {
            "open_auctions": n,
            "cpu_percent": cpu,
            "cpu_total_percent": sum(cpu.values()),
            "redis_commands_per_s": (c1 - c0) / (t1 - t0),
            "redis_used_memory": int(redis_info(redis_url, "used_memory") or 0),
            "rss_kib": {k: rss_kib(p) for k, p in procs.items() if k != "postgres"},
            "load_average": os.getloadavg()[0],
            "provisioned_per_s": n / provisioned_in if n else None,
        }
        result["idle"].append(row)
        print(json.dumps(row), flush=True)
        if n == 0:
            memory["baseline_bytes"] = row["redis_used_memory"]
        else:
            memory["per_open_auction_bytes"] = (row["redis_used_memory"] - memory["baseline_bytes"]) / n
    remove(idle_paths)

    if args.load:
        # One auction, `--bids` accepted bids (fewer than the replay window), flushed.
        before = used_memory(redis_url)
        out = os.path.join(args.out, "many-bids")
        subprocess.run([args.load, "--out-dir", out, "--redis-url", redis_url, "--scenario", "memory",
                        "--ws-urls", env["GAVEL_WS_URLS"], "--provision", "--auctions", "bench/memory",
                        "--bidders", "20", "--rate", "200", "--duration", f"{args.bids / 200:.0f}s"],
                       check=True, stdout=subprocess.DEVNULL)
        accepted = json.load(open(os.path.join(out, "memory.json")))["accepted"]
        time.sleep(2)  # flushed entries leave the flush streams
        memory["bids_in_window"] = accepted
        memory["per_bid_in_window_bytes"] = (used_memory(redis_url) - before) / max(1, accepted)
        print(json.dumps(memory), flush=True)

    for m in [int(x) for x in args.storm.split(",") if x]:
        lead_ms = int((10 + m / 50) * 1000)
        ends = int(time.time() * 1000) + lead_ms
        before_storm = used_memory(redis_url), redis_keys(redis_url)
        load_before = os.getloadavg()[0]
        ticks0 = {k: tree_ticks(p) for k, p in procs.items()}
        commands0 = redis_commands(redis_url)
        paths = [write(manifests, f"storm-{run}-{m}-{i:05d}", manifest(f"storm-{run}-{m}-{i:05d}", ends, "1s"))
                 for i in range(m)]
        wait_for(paths, {"Open", "Closed"}, lead_ms / 1000 + 60)
        ticks1 = {k: tree_ticks(p) for k, p in procs.items()}
        wait_for(paths, {"Closed"}, lead_ms / 1000 + 300)
        ticks2 = {k: tree_ticks(p) for k, p in procs.items()}
        # Work that does not depend on the machine's load: Redis commands for the storm's
        # whole life (provision, close, record, leave).
        commands2 = redis_commands(redis_url)
        close_lag, recorded_lag = [], []
        for p in paths:
            s = status(p)
            close_lag.append(s["closed_at"] - ends)
            recorded_lag.append((s["recorded_at"] or s["mtime_ms"]) - ends)
        row = {
            "auctions": m,
            "close_lag_ms": {"p50": pct(close_lag, .5), "p99": pct(close_lag, .99), "max": max(close_lag)},
            "recorded_lag_ms": {"p50": pct(recorded_lag, .5), "p99": pct(recorded_lag, .99), "max": max(recorded_lag)},
        }
        # Retention 1s: the closed auctions leave Redis; memory goes back to where it was.
        deadline = time.time() + 120
        while redis_keys(redis_url) > before_storm[1] and time.time() < deadline:
            time.sleep(0.5)
        ticks3 = {k: tree_ticks(p) for k, p in procs.items()}
        # CPU seconds of each process: provisioning (until all Open), the storm (until all
        # Closed: close, record, status), and the retention (until their keys left Redis).
        row["cpu_seconds"] = {
            phase: {k: (b[k] - a[k]) / TICK for k in procs}
            for phase, a, b in [("provision", ticks0, ticks1), ("close", ticks1, ticks2), ("leave", ticks2, ticks3)]
        }
        row["load_average"] = [load_before, os.getloadavg()[0]]
        row["redis_commands_per_auction"] = (commands2 - commands0) / m
        row["redis_memory_before_bytes"] = before_storm[0]
        row["redis_memory_after_retention_bytes"] = used_memory(redis_url)
        row["redis_keys_before_after"] = [before_storm[1], redis_keys(redis_url)]
        result["storm"].append(row)
        print(json.dumps(row), flush=True)
        remove(paths)

    os.makedirs(args.out, exist_ok=True)
    json.dump(result, open(os.path.join(args.out, "many.json"), "w"), indent=2)
    names = list(procs)
    lines = ["## Many auctions", "",
             "| open auctions, no bids | Redis commands/s | CPU % of one core: " + " / ".join(names)
             + " | total | operator memory (RSS) | load average |",
             "|---|---|---|---|---|---|"]
    for r in result["idle"]:
        lines.append(f"| {r['open_auctions']:,} | {r['redis_commands_per_s']:,.0f} | "
                     + " / ".join(f"{r['cpu_percent'][k]:.1f}" for k in names)
                     + f" | {r['cpu_total_percent']:.1f} | {r['rss_kib']['operator'] / 1024:.0f} MiB"
                     + f" | {r['load_average']:.1f} |")
    if result["storm"]:
        lines += ["", "| auctions with the same endsAt | close lag p50 / p99 / max (s) | recorded (status Closed) p50 / p99 / max (s) |",
                  "|---|---|---|"]
        for r in result["storm"]:
            c, d = r["close_lag_ms"], r["recorded_lag_ms"]
            lines.append(f"| {r['auctions']:,} | {c['p50']/1000:.2f} / {c['p99']/1000:.2f} / {c['max']/1000:.2f} | "
                         f"{d['p50']/1000:.2f} / {d['p99']/1000:.2f} / {d['max']/1000:.2f} |")
    if result["storm"]:
        lines += ["", "| auctions with the same endsAt | CPU seconds until all closed and recorded: " + " / ".join(names)
                  + " | per 1,000 closes, all processes | load average |", "|---|---|---|---|"]
        for r in result["storm"]:
            c = r["cpu_seconds"]["close"]
            lines.append(f"| {r['auctions']:,} | " + " / ".join(f"{c[k]:.2f}" for k in names)
                         + f" | {sum(c.values()) * 1000 / r['auctions']:.2f} s | {r['load_average'][0]:.1f} |")
    if result["storm"]:
        lines += ["", "| closes (retention 1s) | Redis memory before / after they left (KiB) | Redis keys before / after |", "|---|---|---|"]
        for r in result["storm"]:
            lines.append(f"| {r['auctions']:,} | {r['redis_memory_before_bytes']/1024:,.0f} / {r['redis_memory_after_retention_bytes']/1024:,.0f} | "
                         f"{r['redis_keys_before_after'][0]} / {r['redis_keys_before_after'][1]} |")
    if "per_open_auction_bytes" in memory or "per_bid_in_window_bytes" in memory:
        lines += [""]
        if "per_open_auction_bytes" in memory:
            lines.append(f"- Redis memory per open auction (no bids): {memory['per_open_auction_bytes']/1024:.2f} KiB")
        if "per_bid_in_window_bytes" in memory:
            lines.append(f"- Redis memory per bid in the replay window: {memory['per_bid_in_window_bytes']:.0f} bytes "
                         f"({memory['bids_in_window']} bids on one auction)")
    text = "\n".join(lines) + "\n"
    open(os.path.join(args.out, "many.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
