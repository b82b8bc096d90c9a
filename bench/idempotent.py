"""Sends N chat requests one after another on one keep-alive connection, each with an `Idempotency-Key` of its own
(never a replay), and fails unless every one answered 200: bench/instructions.sh's driver for IDEMPOTENT=1.

    python3 bench/idempotent.py URL N KEY BODY
"""

import http.client
import sys
import urllib.parse
import uuid


def main() -> None:
    url, n, key, body = urllib.parse.urlsplit(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    run = uuid.uuid4().hex
    ok = 0
    for i in range(n):
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"bench-{run}-{i}"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request("POST", url.path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        ok += response.status == 200
    if ok != n:
        sys.exit(f"FAILED: {ok} of {n} requests to {sys.argv[1]} answered 200")


if __name__ == "__main__":
    main()
