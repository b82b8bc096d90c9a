"""Times streamed chat completions event by event: time to first byte, and the gaps between two events.

Usage: stream.py STREAMS (LABEL URL KEY BODY)...; prints, per leg, p50/p99 of both, then what each leg adds to
the first. One keep-alive connection per leg, streams one after another, so no figure includes queueing.
"""

import http.client
import statistics
import sys
import time
from urllib.parse import urlsplit


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def run(streams, url, key, body):
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    first, gaps = [], []
    for _ in range(streams):
        start = time.perf_counter()
        connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            sys.exit(f"{url}: HTTP {response.status}: {response.read()[:200]!r}")
        last = None
        done = False
        while not done:
            line = response.readline()
            if not line:
                break
            now = time.perf_counter()
            if not line.startswith(b"data: "):
                continue
            if last is None:
                first.append((now - start) * 1000)
            else:
                gaps.append((now - last) * 1000)
            last = now
            done = line.startswith(b"data: [DONE]")
        if not done:
            sys.exit(f"{url}: a stream ended without [DONE]")
        response.read()
    return first, gaps


def main():
    streams = int(sys.argv[1])
    legs = sys.argv[2:]
    results = []
    for i in range(0, len(legs), 4):
        label, url, key, body = legs[i : i + 4]
        first, gaps = run(streams, url, key, body)
        results.append((label, first, gaps))
    print(f"{'leg':10} {'TTFB p50':>9} {'p99':>7} {'gap p50':>8} {'p99':>7}   (ms)")
    for label, first, gaps in results:
        print(
            f"{label:10} {statistics.median(first):9.2f} {percentile(first, 0.99):7.2f} "
            f"{statistics.median(gaps):8.2f} {percentile(gaps, 0.99):7.2f}"
        )
    base_label, base_first, base_gaps = results[0]
    for label, first, gaps in results[1:]:
        print(
            f"{label} adds to {base_label}: TTFB p50 {statistics.median(first) - statistics.median(base_first):+.2f} ms, "
            f"p99 {percentile(first, 0.99) - percentile(base_first, 0.99):+.2f} ms; between chunks p50 "
            f"{statistics.median(gaps) - statistics.median(base_gaps):+.2f} ms, "
            f"p99 {percentile(gaps, 0.99) - percentile(base_gaps, 0.99):+.2f} ms"
        )


if __name__ == "__main__":
    main()
