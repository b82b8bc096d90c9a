"""Fills a migrated Tollgate SQLite database with tenants, their Default projects and owners, and project keys
(random SHA-256 digests: no key value exists anywhere), so benchmarks run against a store of production size.

Usage: seed.py DATABASE KEYS TENANTS. Keys are spread evenly over the tenants; one transaction, so a failed run
leaves nothing behind. Ids follow the server's shapes (prefix + 32 hex digits) but are random, not UUIDv7.
"""

import os
import sqlite3
import sys
import time


def ident(prefix):
    return prefix + os.urandom(16).hex()


def main():
    path, keys, tenants = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    now = int(time.time())
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    start = time.perf_counter()
    with db:
        owners = []
        for t in range(tenants):
            tenant, project, member = ident("org_"), ident("proj_"), ident("user_")
            db.execute("INSERT INTO tenants VALUES (?, ?, 'pro', 'active', ?)", (tenant, f"Seed {t}", now))
            db.execute(
                "INSERT INTO projects VALUES (?, ?, 'Default', 'global', 'active', ?)", (project, tenant, now)
            )
            db.execute(
                "INSERT INTO members (id, tenant_id, email, role, created_at) VALUES (?, ?, ?, 'owner', ?)",
                (member, tenant, f"owner{t}@seed.example", now),
            )
            owners.append((tenant, project, member))
        rows = (
            (
                ident("key_"),
                owners[k % tenants][0],
                owners[k % tenants][1],
                f"seed {k}",
                os.urandom(32),
                "sk_live_seed",
                os.urandom(2).hex(),
                owners[k % tenants][2],
                now,
            )
            for k in range(keys)
        )
        db.executemany(
            "INSERT INTO api_keys (id, tenant_id, kind, project_id, name, digest, prefix, last4, created_by, "
            "created_at) VALUES (?, ?, 'project', ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    print(f"seeded {tenants} tenants and {keys} keys in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
