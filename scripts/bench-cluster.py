#!/usr/bin/env python3
"""make bench, cluster part: the same load — N auctions, bidders on all of them — on the
single-Redis platform already running and on a second local platform whose Redis is a
cluster of three masters (GAVEL_LOCAL_REDIS_CLUSTER=1). For each Redis process: the
place-bid scripts it ran per second (EVALSHA calls, from INFO commandstats), the bids its
own auctions accepted as public events (their seq, read on the node owning their slot),
its auctions' share of the bids (bidders are spread evenly over the auctions), and the CPU it used
(/proc/<pid>/stat). Also the cluster bus's pub/sub messages: with sharded pub/sub a node
forwards no live event to other masters (PUBLISH would send each event to every node).

Writes <out>/cluster.json and <out>/cluster.md.
"""
import argparse
import json
import os
import re
import subprocess
import time

# engine/src/keys.rs SHARD_TAGS, and the shard of an auction (FNV-1a of its id, mod 16).
SHARD_TAGS = ["g2687", "g2797", "g973", "g863", "g3170", "g2821", "g293", "g383", "g40",
              "g695", "g348", "g258", "g528", "g438", "g708", "g618"]
TICK = os.sysconf("SC_CLK_TCK")


def fnv1a(text):
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def state_key(auction):
    return "gavel:{%s}:%s:a" % (SHARD_TAGS[fnv1a(auction) % 16], auction)


def slot(auction):
    return crc16(SHARD_TAGS[fnv1a(auction) % 16].encode()) % 16384


def read_env(path):
    env = {}
    for line in open(path):
        m = re.match(r"export (\w+)=(.*)", line.strip())
        if m:
            env[m.group(1)] = m.group(2).strip("'\"")
    return env


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, check=True).stdout


def ports_of(url):
    hosts = url.split("://", 1)[1].split("?")[0].split("/")[0]
    return [int(h.rsplit(":", 1)[1]) for h in hosts.split(",")]


def pid_of(port):
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                         text=True).stdout
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def info_field(text, name):
    m = re.search(rf"{name}[:=](\d+)", text)
    return int(m.group(1)) if m else 0


def sample(ports, cluster):
    nodes = {}
    for port in ports:
        stats = cli(port, "INFO", "commandstats")
        row = {"cpu": cpu_seconds(pid_of(port)),
               "evalsha": info_field(stats, "cmdstat_evalsha:calls"),
               "spublish": info_field(stats, "cmdstat_spublish:calls")}
        if cluster:
            bus = cli(port, "CLUSTER", "INFO")
            row["bus_publish"] = info_field(bus, "cluster_stats_messages_publish_sent")
            row["bus_publishshard"] = info_field(bus, "cluster_stats_messages_publishshard_sent")
        nodes[port] = row
    return nodes


def owners(port):
    """slot ranges → port of each master, from CLUSTER NODES."""
    ranges = []
    for line in cli(port, "CLUSTER", "NODES").splitlines():
        f = line.split()
        if "master" not in f[2]:
            continue
        p = int(f[1].split("@")[0].rsplit(":", 1)[1])
        for r in f[8:]:
            if r.startswith("["):
                continue
            a, _, b = r.partition("-")
            ranges.append((int(a), int(b or a), p))
    return ranges


def run(env, name, args, cluster):
    ports = ports_of(env["GAVEL_REDIS_URL"])
    auctions = [f"bench-{name}/lot-{i}" for i in range(args.auctions)]
    before = sample(ports, cluster)
    t0 = time.time()
    subprocess.run([args.load, "--out-dir", args.out, "--scenario", f"cluster-{name}",
                    "--ws-urls", env["GAVEL_WS_URLS"], "--redis-url", env["GAVEL_REDIS_URL"],
                    "--provision", "--auctions", ",".join(auctions),
                    "--bidders", str(args.bidders), "--duration", f"{args.seconds}s"],
                   check=True, stdout=subprocess.DEVNULL)
    elapsed = time.time() - t0
    after = sample(ports, cluster)
    load = json.load(open(os.path.join(args.out, f"cluster-{name}.json")))
    ranges = owners(ports[0]) if cluster else [(0, 16383, ports[0])]
    owner = lambda a: next(p for lo, hi, p in ranges if lo <= slot(a) <= hi)
    accepted = {p: 0 for p in ports}
    count = {p: 0 for p in ports}
    for a in auctions:
        p = owner(a)
        seq = cli(p, "HGET", state_key(a), "seq").strip()
        accepted[p] += int(seq or 0)
        count[p] += 1
    nodes = []
    for p in ports:
        d = {k: after[p][k] - before[p][k] for k in after[p]}
        nodes.append({"port": p, "auctions": count[p],
                      "scripts_per_s": d["evalsha"] / elapsed,
                      "accepted_per_s": accepted[p] / load["duration_s"],
                      "spublish_per_s": d["spublish"] / elapsed,
                      "cpu_percent": d["cpu"] / elapsed * 100,
                      "bus_publish": d.get("bus_publish", 0),
                      "bus_publishshard": d.get("bus_publishshard", 0)})
    processed = (load["accepted"] + sum(load["rejected"].values())) / load["duration_s"]
    return {"name": name, "processed_per_s": processed, "accepted_per_s": load["accepted_per_s"],
            "p50_ms": load["bid_result_latency"]["p50_ms"],
            "p99_ms": load["bid_result_latency"]["p99_ms"], "nodes": nodes}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--single-env", required=True)
    ap.add_argument("--cluster-dir", required=True)
    ap.add_argument("--gavel-local", required=True)
    ap.add_argument("--load", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--auctions", type=int, default=100)
    ap.add_argument("--bidders", type=int, default=300)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    results = [run(read_env(args.single_env), "single", args, False)]
    env = dict(os.environ, GAVEL_LOCAL_REDIS_CLUSTER="1")
    subprocess.run([args.gavel_local, "down", "--dir", args.cluster_dir],
                   capture_output=True, env=env)
    subprocess.run([args.gavel_local, "up", "--dir", args.cluster_dir], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    try:
        results.append(run(read_env(os.path.join(args.cluster_dir, "env")), "cluster", args,
                           True))
    finally:
        subprocess.run([args.gavel_local, "down", "--dir", args.cluster_dir],
                       capture_output=True, env=env)
    json.dump(results, open(os.path.join(args.out, "cluster.json"), "w"), indent=2)
    lines = [f"Redis Cluster ({args.auctions} auctions, {args.bidders} bidders on all of them, "
             f"{args.seconds} s; the same load on one Redis and on three masters):", "",
             "| Redis | process (port) | auctions | scripts/s it ran | its auctions' share of all bids/s | "
             "public events/s of its auctions | SPUBLISH/s | CPU % | pub/sub messages sent over the cluster bus |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for n in r["nodes"]:
            bus = "–" if r["name"] == "single" else f"{n['bus_publish'] + n['bus_publishshard']}"
            share = r["processed_per_s"] * n["auctions"] / args.auctions
            lines.append(f"| {r['name']} | {n['port']} | {n['auctions']} | {n['scripts_per_s']:,.0f} | "
                         f"{share:,.0f} | {n['accepted_per_s']:,.0f} | {n['spublish_per_s']:,.0f} | "
                         f"{n['cpu_percent']:.0f} | {bus} |")
        lines.append(f"| {r['name']} | **total** | {args.auctions} | | "
                     f"**{r['processed_per_s']:,.0f}** processed ({r['accepted_per_s']:,.0f} accepted) | | | | "
                     f"bid→result p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms |")
    text = "\n".join(lines) + "\n"
    open(os.path.join(args.out, "cluster.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
