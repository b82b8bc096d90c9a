"""Fills a migrated Tollgate SQLite database with tenants, their Default projects and owners, and project keys
(random SHA-256 digests: no key value exists anywhere), so benchmarks run against a store of production size.

Usage: seed.py DATABASE KEYS TENANTS [LOAD_KEYS KEY_FILE]. Keys are spread evenly over the tenants; one
transaction, so a failed run leaves nothing behind. Ids follow the server's shapes (prefix + 32 hex digits) but are
random, not UUIDv7. With LOAD_KEYS, the first LOAD_KEYS keys are real ones (Tollgate's format: `sk_live_`, 32 base62
characters, a base62 CRC32; the digest is their SHA-256), written one per line to KEY_FILE for the load generator,
and every tenant is granted credit enough for any bench (a grant in the ledger and the balance beside it).
"""

import hashlib
import os
import sqlite3
import sys
import time
import zlib

BASE62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
GRANT_MICROS = 10**15


def real_key():
    """A key in Tollgate's format (crates/tollgate-core/src/key.rs) and its digest."""
    body = bytes(BASE62[b % 62] for b in os.urandom(32)).decode()
    signed = "sk_live_" + body
    n = zlib.crc32(signed.encode())
    digits = []
    for _ in range(6):
        digits.append(chr(BASE62[n % 62]))
        n //= 62
    value = signed + "".join(reversed(digits))
    return value, hashlib.sha256(value.encode()).digest()


def ident(prefix):
    return prefix + os.urandom(16).hex()


def main():
    path, keys, tenants = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    load_keys = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    key_file = open(sys.argv[5], "w") if load_keys else None
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
            if load_keys:
                db.execute(
                    "INSERT INTO credit_balances (tenant_id, balance_micros, granted_micros, version) "
                    "VALUES (?, ?, ?, 1)",
                    (tenant, GRANT_MICROS, GRANT_MICROS),
                )
                db.execute(
                    "INSERT INTO ledger_entries VALUES (?, ?, 'grant', ?, ?, 'seed', ?)",
                    (ident("ledg_"), tenant, GRANT_MICROS, GRANT_MICROS, now),
                )

        def digest(k):
            if k >= load_keys:
                return os.urandom(32)
            value, hashed = real_key()
            key_file.write(value + "\n")
            return hashed

        rows = (
            (
                ident("key_"),
                owners[k % tenants][0],
                owners[k % tenants][1],
                f"seed {k}",
                digest(k),
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
    if key_file:
        key_file.close()
    print(f"seeded {tenants} tenants and {keys} keys ({load_keys} usable) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
