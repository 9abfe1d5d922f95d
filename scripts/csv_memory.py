#!/usr/bin/env python3
"""`make csv-memory`: the server's memory while it streams a long CSV statement.

Seeds one account with 100,000 entries (real transfers from the settlement account, with their
`balance_after`), starts the server once, and reads `GET /v1/accounts/{id}/entries` with
`Accept: text/csv` in full, twice: once as fast as it comes, once slowly (a client reading a
chunk every few milliseconds, so the server must wait rather than buffer). Reports the server's
peak RSS (the kernel's VmHWM) before and after, the rows and bytes received, and checks every
row arrived in order with the right running balance. Not a test; CI does not run it.
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import served  # noqa: E402

ENTRIES = 100_000


def pg_bin(name):
    for version in sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (version / name).exists():
            return str(version / name)
    return name


def psql(url, sql):
    return subprocess.run([pg_bin("psql"), url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def with_database(url, name):
    return re.sub(r"/[^/?]+(\?|$)", f"/{name}\\1", url, count=1)


def call(base, path, body=None, token=None, headers=()):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in headers:
        request.add_header(name, value)
    return urllib.request.urlopen(request, timeout=600)


def rss_mib(pid, field="VmHWM"):
    """The kernel's VmHWM (peak) or VmRSS (now) of `pid`, in MiB."""
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


class Sampler(threading.Thread):
    """The highest VmRSS of `pid` seen while it runs, sampled every 10 ms: the login's password
    hash sets VmHWM before the export starts, so the peak alone could hide a smaller rise."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.highest, self.done = pid, 0.0, threading.Event()

    def run(self):
        while not self.done.is_set():
            self.highest = max(self.highest, rss_mib(self.pid, "VmRSS"))
            time.sleep(0.01)

    def stop(self):
        self.done.set()
        self.join()
        return self.highest


def read_statement(base, account, token, pause):
    """(rows, bytes): the whole CSV, each row checked against the seeded running balance."""
    response = call(base, f"/v1/accounts/{account}/entries", token=token,
                    headers=[("Accept", "text/csv")])
    header = response.readline().decode()
    if not header.startswith("entry_id,created_at"):
        sys.exit(f"csv-memory: unexpected header {header!r}")
    rows, size = 0, len(header)
    while True:
        line = response.readline()
        if not line:
            break
        size += len(line)
        rows += 1
        fields = line.decode().rstrip("\n").split(",")
        if fields[5] != str(rows) or fields[3] != "1":
            sys.exit(f"csv-memory: row {rows} is {line!r}")
        if pause and rows % 100 == 0:
            time.sleep(pause)
    return rows, size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=str(ROOT / "target/debug/simplebank"))
    args = parser.parse_args()
    base_url = served.require_db_source("csv-memory")
    admin = with_database(base_url, "postgres")
    psql(admin, "DROP DATABASE IF EXISTS simplebank_csv WITH (FORCE)")
    psql(admin, "CREATE DATABASE simplebank_csv")
    url = with_database(base_url, "simplebank_csv")
    subprocess.run([args.binary, "migrate", "up"], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, DB_SOURCE=url, NO_COLOR="1"))
    process, http, _ = served.serve(args.binary, ROOT / "target" / "csv-memory-server.log",
                                    DB_SOURCE=url, MAIL_SENDER="log",
                                    TOKEN_SYMMETRIC_KEY="csv-memory-key-of-exactly-32-b..")
    try:
        call(http, "/v1/users", {"username": "ledger", "full_name": "Long History",
                                 "email": "ledger@example.com", "password": "long-history-1"})
        token = json.load(call(http, "/v1/users/login",
                               {"username": "ledger", "password": "long-history-1"}))["access_token"]
        account = json.load(call(http, "/v1/accounts", {"currency": "USD"}, token))["account"]["id"]
        print(f"csv-memory: seeding {ENTRIES:,} entries on account {account}", flush=True)
        psql(url, f"""
            BEGIN;
            WITH bank AS (SELECT id FROM accounts WHERE kind = 'settlement' AND currency = 'USD'),
            t AS (
                INSERT INTO transfers (from_account_id, to_account_id, amount, currency, reference)
                SELECT bank.id, {account}, 1, 'USD', 'csv-' || g FROM generate_series(1, {ENTRIES}) g, bank
                RETURNING id, from_account_id, to_account_id
            ),
            e AS (
                INSERT INTO entries (account_id, transfer_id, amount, balance_after)
                SELECT to_account_id, id, 1, row_number() OVER (ORDER BY id) FROM t
                UNION ALL
                SELECT from_account_id, id, -1, -row_number() OVER (ORDER BY id) FROM t
            )
            SELECT count(*) FROM t;
            UPDATE accounts SET balance = {ENTRIES} WHERE id = {account};
            UPDATE accounts SET balance = -{ENTRIES} WHERE kind = 'settlement' AND currency = 'USD';
            COMMIT;
        """)
        before, idle = rss_mib(process.pid), rss_mib(process.pid, "VmRSS")
        sampler = Sampler(process.pid)
        sampler.start()
        started = time.monotonic()
        rows, size = read_statement(http, account, token, pause=0)
        fast = time.monotonic() - started
        slow_started = time.monotonic()
        slow_rows, _ = read_statement(http, account, token, pause=0.005)
        slow = time.monotonic() - slow_started
        highest = sampler.stop()
        after = rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    if rows != ENTRIES or slow_rows != ENTRIES:
        sys.exit(f"csv-memory: {rows} and {slow_rows} rows, expected {ENTRIES}")
    print(f"csv-memory: {rows:,} rows, {size / 1e6:.1f} MB of CSV, in order with their running "
          f"balances; fast read {fast:.1f} s, slow read {slow:.1f} s")
    print(f"csv-memory: server RSS {idle:.1f} MiB before the exports, at most {highest:.1f} MiB "
          f"during them (sampled every 10 ms); peak RSS (VmHWM) {before:.1f} MiB before, "
          f"{after:.1f} MiB after")


if __name__ == "__main__":
    main()
