"""Reads one bench/run.sh run's outputs (wrk text for part a, oha JSON for part b) and prints its two tables.

Usage: report.py RUN_DIR RATE LEG...   (the first leg is the direct one; "hop" and "nginx" are the references)
Exits non-zero if a fixed-rate leg had errors, so run.sh fails loudly; wrk legs are checked by run.sh itself.
"""

import json
import re
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(path):
    """RPS and the p50/p99 latencies (ms) from wrk --latency's output."""
    text = open(path).read()
    rps = float(re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M).group(1))
    pct = {}
    for p, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        pct[p] = float(value) * UNITS[unit]
    return rps, pct["50"], pct["99"]


def oha(path, leg):
    """Achieved RPS and the p50/p99/p99.9 latencies (ms) from oha -j; exits on any failed request."""
    d = json.load(open(path))
    errors = d["errorDistribution"]
    statuses = {k: v for k, v in d["statusCodeDistribution"].items() if not k.startswith("2")}
    if errors or statuses:
        sys.exit(f"FAILED: the {leg} leg had errors at the fixed rate: {errors} {statuses}")
    lat = d["latencyPercentiles"]
    return d["summary"]["requestsPerSec"], [lat[p] * 1e3 for p in ("p50", "p99", "p99.9")]


def main():
    run, rate, legs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    direct = legs[0]

    a = {leg: wrk(f"{run}/a-{leg}.txt") for leg in legs}
    best = max(a[leg][0] for leg in ("hop", "nginx"))
    print("(a) saturation (wrk, closed loop)")
    print(f"{'leg':<12}{'RPS':>10}{'/ direct':>10}{'/ best ref':>12}{'p50 ms':>9}{'p99 ms':>9}")
    for leg in legs:
        rps, p50, p99 = a[leg]
        print(f"{leg:<12}{rps:>10.0f}{rps / a[direct][0]:>10.3f}{rps / best:>12.3f}{p50:>9.2f}{p99:>9.2f}")

    b = {leg: oha(f"{run}/b-{leg}.json", leg) for leg in legs}
    print()
    print(f"(b) fixed rate {rate:.0f} RPS (oha, open loop, latency-corrected): ms, and added to direct")
    print(f"{'leg':<12}{'RPS':>8}{'p50':>8}{'p99':>8}{'p99.9':>8}{'+p50':>8}{'+p99':>8}{'+p99.9':>8}")
    for leg in legs:
        rps, lat = b[leg]
        added = [x - d for x, d in zip(lat, b[direct][1])]
        print(f"{leg:<12}{rps:>8.0f}" + "".join(f"{x:>8.2f}" for x in lat + added))
    if "tollgate" in a and "tollgate-pg" in a:
        print()
        print(f"one node on PostgreSQL / on SQLite: {a['tollgate-pg'][0] / a['tollgate'][0]:.3f} (saturation RPS)")
    # Below the rate asked for, the leg could not keep up and its latencies are a queue's, not the path's.
    slow = [leg for leg in legs if b[leg][0] < 0.95 * rate]
    if slow:
        print(f"WARNING: {', '.join(slow)} did not hold {rate:.0f} RPS: their latencies include queueing")


main()
