#!/usr/bin/env python3
"""The flushers' lag for `make bench`, from the `gavel_flush_lag_seconds` histograms.

  flush-lag.py scrape URL[,URL...]   the summed cumulative buckets of every /metrics (JSON)
  flush-lag.py diff BEFORE AFTER     the run's own distribution: count and, per quantile, the
                                     upper bound (ms) of the bucket it falls in (JSON)

A histogram only tells which bucket a quantile falls in, so the figures are upper bounds.
"""
import json
import sys
import urllib.request

METRIC = "gavel_flush_lag_seconds_bucket"


def scrape(urls):
    buckets = {}
    for url in filter(None, urls.split(",")):
        base = url.rstrip("/")
        try:
            text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        except OSError as e:
            sys.exit(f"flush-lag: cannot read {base}/metrics: {e}")
        for line in text.splitlines():
            if line.startswith(METRIC + "{"):
                labels, value = line.rsplit(" ", 1)
                le = labels.split('le="', 1)[1].split('"', 1)[0]
                buckets[le] = buckets.get(le, 0) + float(value)
    return buckets


def diff(before, after):
    bounds = sorted(after, key=lambda le: float("inf") if le == "+Inf" else float(le))
    counts = [(le, after[le] - before.get(le, 0)) for le in bounds]
    total = counts[-1][1] if counts else 0

    def quantile(q):
        for le, cumulative in counts:
            if total and cumulative >= q * total:
                return "inf" if le == "+Inf" else round(float(le) * 1000, 1)
        return None

    return {"count": int(total), "p50_le_ms": quantile(0.5), "p99_le_ms": quantile(0.99),
            "p999_le_ms": quantile(0.999)}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "scrape":
        print(json.dumps(scrape(sys.argv[2])))
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        print(json.dumps(diff(json.load(open(sys.argv[2])), json.load(open(sys.argv[3])))))
    else:
        sys.exit(__doc__)
