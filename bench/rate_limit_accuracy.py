"""Drives one key at a fixed rate for a fixed time, one request after another on keep-alive connections, and
prints how many were admitted (200) and refused (429): bench/rate_limit_accuracy.sh's load generator (stdlib only).

    python3 bench/rate_limit_accuracy.py PORT[,PORT...] KEY RATE_PER_SECOND SECONDS BODY

Several ports (nodes sharing one limiter) get the requests in turn, each on its own connection.
"""

import http.client
import json
import sys
import time


def main() -> None:
    ports = [int(p) for p in sys.argv[1].split(",")]
    key, rate, seconds, body = sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for port in ports]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    counts: dict[int, int] = {}
    start = time.monotonic()
    sent = 0
    # Open loop on a schedule: request i goes at start + i / rate (late ones go at once, none is skipped).
    while True:
        due = start + sent / rate
        if due - start >= seconds:
            break
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        conn = conns[sent % len(conns)]
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        counts[response.status] = counts.get(response.status, 0) + 1
        sent += 1
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "elapsed_s": round(elapsed, 3), "statuses": counts}))


if __name__ == "__main__":
    main()
