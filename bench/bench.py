#!/usr/bin/env python3
"""`make bench`: how fast a transfer is, measured side by side in one run against one PostgreSQL.

Rows:
  A  simple_bank's SQL: pgbench replaying, per transfer, the statements simple_bank's Go server
     sends (read from-account, read to-account, BEGIN, insert transfer, insert two entries, two
     `balance = balance + x` updates in ascending id order, COMMIT: nine round trips, prepared),
     on a copy of simple_bank's tables in schema `sb`.
  B  our transfer SQL: pgbench running exactly the statement our server sends for one transfer
     (MOVE_MONEY, read from src/store/transfers.rs at run time, so it cannot drift).
  C  our HTTP API, D  our gRPC API: the release server under `simplebank-loadgen` (Rust,
     keep-alive connections, every request authenticated as the from-account's owner, random
     from/to accounts), counting only 2xx / OK;
  E  hot pair: C with every transfer between the same two accounts, both directions.
  C1 and E1: C and E against a second server started with GROUP_COMMIT=false (one database
     transaction per transfer), to show what group commit itself is worth.
  B0 and C0: B and C for a baseline revision (`--baseline`, the Makefile's BENCH_BASELINE: the
     last commit before holds), its MOVE_MONEY under pgbench and its release binary, built from
     `git archive` into target/bench-baseline, over the same database: what the checks added
     since (holds' `held`, account status, overdraft) cost the transfer path. Each runs before
     its counterpart, so a table grown by the earlier rows counts against the new code.
All on 10,000 funded accounts whose users are all logged in, at concurrency 16 and 64, each for
a fixed time after a warm-up. Afterwards the ledger invariants are checked; the table (with the
server's peak RSS and the ratios C/A, D/A, C/B) goes to stdout and bench/results/.

This is not a test and never runs in `make test`. Ratios between rows of the same run are the
result; absolute numbers depend on the machine and on whatever else it is doing.
"""

import argparse
import datetime
import json
import signal
import urllib.request
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import served  # noqa: E402  (scripts/served.py, shared with the other scripts that run a server)
BINARY = ROOT / "target/release/simplebank"
LOADGEN = ROOT / "target/release/simplebank-loadgen"
TOKEN_KEY = "bench-key-of-exactly-32-bytes..."
PASSWORD = "bench-password"
ACCOUNTS = 10_000
FIRST_ID = 100_000  # account ids are 6 digits, and each owner's username is its account id
BALANCE = 1_000_000_000
AMOUNT = 1


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


def setup(base_url):
    """A fresh `simplebank_bench` database: our migrations, then both seeds."""
    admin = with_database(base_url, "postgres")
    psql(admin, "DROP DATABASE IF EXISTS simplebank_bench WITH (FORCE)")
    psql(admin, "CREATE DATABASE simplebank_bench")
    url = with_database(base_url, "simplebank_bench")
    subprocess.run([BINARY, "migrate", "up"], check=True,
                   env=dict(os.environ, DB_SOURCE=url, NO_COLOR="1"), stdout=subprocess.DEVNULL)
    last = FIRST_ID + ACCOUNTS - 1
    # Ours: users, accounts funded by real deposits (transfer + two entries each) so the ledger
    # invariants hold from the start.
    psql(url, f"""
        BEGIN;
        SELECT setval(pg_get_serial_sequence('accounts', 'id'), {FIRST_ID - 1});
        INSERT INTO users (username, hashed_password, full_name, email)
            SELECT g::text, '!', 'bench user', g::text || '@bench.invalid'
            FROM generate_series({FIRST_ID}, {last}) g;
        INSERT INTO accounts (owner, currency) SELECT g::text, 'USD' FROM generate_series({FIRST_ID}, {last}) g;
        WITH bank AS (SELECT id FROM accounts WHERE kind = 'settlement' AND currency = 'USD'),
        t AS (
            INSERT INTO transfers (from_account_id, to_account_id, amount, currency)
            SELECT bank.id, a.id, {BALANCE}, 'USD' FROM accounts a, bank
            WHERE a.kind = 'customer' ORDER BY a.id RETURNING id, from_account_id, to_account_id
        ),
        e AS (
            INSERT INTO entries (account_id, transfer_id, amount, balance_after)
            SELECT to_account_id, id, {BALANCE}, {BALANCE} FROM t
            UNION ALL
            SELECT from_account_id, id, -{BALANCE}, -{BALANCE} * row_number() OVER (ORDER BY id) FROM t
        )
        SELECT count(*) FROM t;
        UPDATE accounts SET balance = {BALANCE} WHERE kind = 'customer';
        UPDATE accounts SET balance = -{BALANCE}::bigint * {ACCOUNTS}
            WHERE kind = 'settlement' AND currency = 'USD';
        COMMIT;
    """)
    psql(url, "VACUUM ANALYZE")
    # simple_bank's tables (its schema: no balance CHECK, entries without balance_after).
    psql(url, f"""
        CREATE SCHEMA sb;
        CREATE TABLE sb.accounts (id bigserial PRIMARY KEY, owner varchar NOT NULL,
            balance bigint NOT NULL, currency varchar NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now());
        CREATE INDEX ON sb.accounts (owner);
        CREATE UNIQUE INDEX ON sb.accounts (owner, currency);
        CREATE TABLE sb.entries (id bigserial PRIMARY KEY,
            account_id bigint NOT NULL REFERENCES sb.accounts (id), amount bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now());
        CREATE INDEX ON sb.entries (account_id);
        CREATE TABLE sb.transfers (id bigserial PRIMARY KEY,
            from_account_id bigint NOT NULL REFERENCES sb.accounts (id),
            to_account_id bigint NOT NULL REFERENCES sb.accounts (id),
            amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
        CREATE INDEX ON sb.transfers (from_account_id);
        CREATE INDEX ON sb.transfers (to_account_id);
        CREATE INDEX ON sb.transfers (from_account_id, to_account_id);
        INSERT INTO sb.accounts (id, owner, balance, currency)
            SELECT g, g::text, {BALANCE}, 'USD' FROM generate_series({FIRST_ID}, {last}) g;
    """)
    psql(url, "VACUUM ANALYZE")
    return url


PICK = f"""\\set from random({FIRST_ID}, {FIRST_ID + ACCOUNTS - 1})
\\set to random({FIRST_ID}, {FIRST_ID + ACCOUNTS - 2})
\\if :to >= :from
\\set to :to + 1
\\endif
\\set lo least(:from, :to)
\\set hi greatest(:from, :to)
"""

# A: the nine statements simple_bank's TransferTx handler sends for one transfer.
SIMPLE_BANK = PICK + f"""SELECT id, owner, balance, currency, created_at FROM sb.accounts WHERE id = :from LIMIT 1;
SELECT id, owner, balance, currency, created_at FROM sb.accounts WHERE id = :to LIMIT 1;
BEGIN;
INSERT INTO sb.transfers (from_account_id, to_account_id, amount) VALUES (:from, :to, {AMOUNT}) RETURNING id, from_account_id, to_account_id, amount, created_at;
INSERT INTO sb.entries (account_id, amount) VALUES (:from, -{AMOUNT}) RETURNING id, account_id, amount, created_at;
INSERT INTO sb.entries (account_id, amount) VALUES (:to, {AMOUNT}) RETURNING id, account_id, amount, created_at;
\\if :from < :to
UPDATE sb.accounts SET balance = balance + -{AMOUNT} WHERE id = :from RETURNING id, owner, balance, currency, created_at;
UPDATE sb.accounts SET balance = balance + {AMOUNT} WHERE id = :to RETURNING id, owner, balance, currency, created_at;
\\else
UPDATE sb.accounts SET balance = balance + {AMOUNT} WHERE id = :to RETURNING id, owner, balance, currency, created_at;
UPDATE sb.accounts SET balance = balance + -{AMOUNT} WHERE id = :from RETURNING id, owner, balance, currency, created_at;
\\endif
COMMIT;
"""


def our_transfer_script(source=None):
    """B: MOVE_MONEY exactly as the server sends it, its $n bound to pgbench variables (B0: the
    baseline revision's, from `source`)."""
    source = source or (ROOT / "src/store/transfers.rs").read_text()
    sql = re.search(r'const MOVE_MONEY: &str = r#"(.*?)"#;', source, re.S).group(1)
    # $1 from, $2 to, $3 amount, $4 currency, $5 movement, $6 owner (the from-account's owner,
    # whose username is the account id); then (none here) $7 the hold a capture names, $8 the
    # reference, $9 the metadata, $10 the transfer a reversal reverses. sqlx declares each
    # parameter's type in its Parse message; pgbench declares none, so the same types are
    # written as casts. A baseline's statement has only the parameters it had.
    values = {1: ":from::bigint", 2: ":to::bigint", 3: ":amount::bigint", 4: ":currency::text",
              5: ":movement::text", 6: ":owner::text", 7: "NULL::bigint", 8: "NULL::text",
              9: "NULL::text", 10: "NULL::bigint"}
    sql = re.sub(r"\$(\d+)\b", lambda m: values[int(m.group(1))], sql)
    body = " ".join(line.strip() for line in sql.strip().splitlines())
    # pgbench's \\set is numeric only: the text parameters come from -D (see `pgbench`).
    return PICK + f"\\set amount {AMOUNT}\n\\set owner :from\n" + body + ";\n"


def settle(url):
    """Before each row: vacuum what the previous rows left behind and flush dirty pages, so no row
    pays for another's dead tuples or checkpoint."""
    psql(url, "VACUUM (ANALYZE) accounts, transfers, entries, sb.accounts, sb.transfers, sb.entries")
    try:
        psql(url, "CHECKPOINT")
    except subprocess.CalledProcessError:
        pass  # not a superuser (a DB_SOURCE of your own): rows then share checkpoints by chance


def pgbench(url, script, clients, seconds, warmup, log_dir, tag):
    settle(url)
    path = pathlib.Path(log_dir) / f"{tag}.sql"
    path.write_text(script)
    common = [pg_bin("pgbench"), "-n", "-M", "prepared", "-c", str(clients),
              "-j", str(min(clients, 4)), "-D", "currency=USD", "-D", "movement=transfer",
              "-f", str(path)]
    subprocess.run(common + ["-T", str(warmup), url], check=True, capture_output=True)
    prefix = pathlib.Path(log_dir) / tag
    run = subprocess.run(common + ["-T", str(seconds), "-l", "--log-prefix", str(prefix), url],
                         check=True, capture_output=True, text=True, cwd=log_dir)
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", run.stdout).group(1))
    failed = int(re.search(r"number of failed transactions: (\d+)", run.stdout).group(1)) \
        if "number of failed transactions" in run.stdout else 0
    latencies = []
    for log in pathlib.Path(log_dir).glob(f"{tag}.*"):
        if log.suffix == ".sql":
            continue
        for line in log.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3:
                latencies.append(int(fields[2]) / 1000.0)
        log.unlink()
    latencies.sort()
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return {"tps": tps, "p50": p50, "p99": p99, "failed": failed}


def baseline(rev):
    """The baseline revision's MOVE_MONEY source and release binary (built once per revision,
    from `git archive`, in a target directory of its own)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.strip()
    home = ROOT / "target" / "bench-baseline"
    tree = home / commit[:12]
    binary = tree / "target" / "release" / "simplebank"
    if not binary.exists():
        print(f"bench: building the baseline {commit[:12]} (release, once)", flush=True)
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        subprocess.run(["cargo", "build", "--locked", "--release", "--quiet", "--bin",
                        "simplebank"], cwd=tree, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=str(tree / "target")))
    source = subprocess.run(["git", "show", f"{commit}:src/store/transfers.rs"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    return commit[:12], source, binary


class Server:
    """The release server on free ports over the bench database."""

    def __init__(self, url, log_path, binary=None, **settings):
        self.process, self.http, grpc = served.serve(
            binary or BINARY, log_path, args=("serve", "--no-migrate"), DB_SOURCE=url,
            TOKEN_SYMMETRIC_KEY=TOKEN_KEY, MAIL_SENDER="log",
            DB_MAX_CONNECTIONS="32",
            # 10,000 logins from one address: the login limits would refuse most.
            LOGIN_ATTEMPTS_PER_IP="0", LOGIN_FAILURES_PER_USERNAME="0", **settings)
        self.grpc = f"http://{grpc}"

    def peak_rss_mib(self):
        status = pathlib.Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def log_everyone_in(url, server, work):
    """One user signs up over HTTP; every bench user gets its password hash; all log in."""
    body = json.dumps({"username": "benchseed", "full_name": "bench seed",
                       "email": "seed@bench.invalid", "password": PASSWORD}).encode()
    request = urllib.request.Request(f"{server.http}/v1/users", data=body,
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()
    psql(url, "UPDATE users SET hashed_password = (SELECT hashed_password FROM users "
              "WHERE username = 'benchseed') WHERE hashed_password = '!' AND username <> 'simplebank'")
    users = pathlib.Path(work) / "users.txt"
    users.write_text("".join(f"{FIRST_ID + i} {PASSWORD}\n" for i in range(ACCOUNTS)))
    tokens = pathlib.Path(work) / "tokens.txt"
    subprocess.run([LOADGEN, "login", "--http", server.http, "--users", users, "--out", tokens,
                    "--concurrency", "8"], check=True)
    return tokens


def loadgen(api, url, tokens, clients, seconds, warmup, hot=False, db=None):
    if db:
        settle(db)
    command = [LOADGEN, "run", "--api", api, "--url", url, "--tokens", tokens,
               "--concurrency", str(clients), "--seconds", str(seconds), "--warmup", str(warmup)]
    if hot:
        command.append("--hot")
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    failed = sum(report["errors"].values())
    return {"tps": report["tps"], "p50": report["p50_ms"], "p99": report["p99_ms"],
            "failed": failed, "errors": report["errors"]}


def check_invariants(url):
    broken = psql(url, """
        SELECT count(*) FROM accounts a
        WHERE a.balance <> (SELECT coalesce(sum(amount), 0) FROM entries e WHERE e.account_id = a.id)
    """)
    total = psql(url, "SELECT coalesce(sum(balance), 0) FROM accounts WHERE currency = 'USD'")
    negative = psql(url, "SELECT count(*) FROM accounts WHERE kind = 'customer' "
                         "AND balance < -overdraft_limit")
    sb_total = psql(url, "SELECT sum(balance) FROM sb.accounts")
    problems = []
    if broken != "0":
        problems.append(f"{broken} accounts whose balance is not the sum of their entries")
    if total != "0":
        problems.append(f"USD does not sum to zero: {total}")
    if negative != "0":
        problems.append(f"{negative} customer balances below minus their overdraft limit")
    if int(sb_total) != BALANCE * ACCOUNTS:
        problems.append(f"simple_bank's copy lost money: {sb_total}")
    return problems


def main():
    global BINARY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="measured time per row")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--binary", default=str(BINARY), help="the simplebank binary to migrate with")
    parser.add_argument("--baseline", help="a git revision to measure rows B0 and C0 for")
    args = parser.parse_args()
    BINARY = pathlib.Path(args.binary)
    base = os.environ.get("DB_SOURCE") or sys.exit("DB_SOURCE must be set (make bench sets it)")
    base_rev, base_source, base_binary = baseline(args.baseline) if args.baseline \
        else (None, None, None)
    print("bench: seeding 10,000 funded accounts (ours and simple_bank's copy)", flush=True)
    url = setup(base)
    rows = []
    with tempfile.TemporaryDirectory() as logs:
        for clients in (int(c) for c in args.clients.split(",")):
            scripts = [("A simple_bank SQL", SIMPLE_BANK)]
            if base_rev:
                scripts.append((f"B0 baseline SQL ({base_rev})", our_transfer_script(base_source)))
            scripts.append(("B our transfer SQL", our_transfer_script()))
            for name, script in scripts:
                print(f"bench: {name} at {clients} clients, {args.seconds} s", flush=True)
                result = pgbench(url, script, clients, args.seconds, args.warmup, logs,
                                 name.split()[0] + str(clients))
                rows.append((name, clients, result))
        # One process for the logins and the measured rows: its peak RSS (the kernel's VmHWM)
        # covers the whole run, 10,000 argon2 logins included — the figure a pod's memory limit
        # must hold, so nothing is left out by a restart.
        print("bench: starting the release server and logging 10,000 users in", flush=True)
        clients_list = [int(c) for c in args.clients.split(",")]
        server = Server(url, ROOT / "target" / "bench-server.log")
        try:
            tokens = log_everyone_in(url, server, logs)
            login_peak_rss = server.peak_rss_mib()
            if base_rev:
                # The baseline first (the server above idles meanwhile): the same tokens, the
                # same database, its own binary.
                old = Server(url, ROOT / "target" / "bench-server-baseline.log", base_binary)
                try:
                    for clients in clients_list:
                        name = f"C0 baseline HTTP ({base_rev})"
                        print(f"bench: {name} at {clients} clients, {args.seconds} s", flush=True)
                        result = loadgen("http", old.http, tokens, clients, args.seconds,
                                         args.warmup, False, url)
                        rows.append((name, clients, result))
                finally:
                    old.stop()
            for clients in clients_list:
                for name, api, target, hot in [("C our HTTP API", "http", server.http, False),
                                               ("D our gRPC API", "grpc", server.grpc, False),
                                               ("E hot pair (HTTP)", "http", server.http, True)]:
                    print(f"bench: {name} at {clients} clients, {args.seconds} s", flush=True)
                    result = loadgen(api, target, tokens, clients, args.seconds, args.warmup, hot, url)
                    rows.append((name, clients, result))
            peak_rss = server.peak_rss_mib()
        finally:
            server.stop()
        server = Server(url, ROOT / "target" / "bench-server-nogroup.log", GROUP_COMMIT="false")
        try:
            for clients in clients_list:
                for name, hot in [("C1 HTTP, GROUP_COMMIT=false", False),
                                  ("E1 hot pair, GROUP_COMMIT=false", True)]:
                    print(f"bench: {name} at {clients} clients, {args.seconds} s", flush=True)
                    result = loadgen("http", server.http, tokens, clients, args.seconds,
                                     args.warmup, hot, url)
                    rows.append((name, clients, result))
        finally:
            server.stop()
    problems = check_invariants(url)

    lines = ["| row | clients | transfers/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for name, clients, r in rows:
        errors = ", ".join(f"{code} {n}" for code, n in sorted(r.get("errors", {}).items())) \
            or str(r["failed"])
        lines.append(f"| {name} | {clients} | {r['tps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {errors} |")
    by = {(name.split()[0], clients): r for name, clients, r in rows}
    lines.append("")
    for clients in sorted({c for _, c, _ in rows}):
        a, b = by.get(("A", clients)), by.get(("B", clients))
        c, d, c1 = by.get(("C", clients)), by.get(("D", clients)), by.get(("C1", clients))
        e, e1 = by.get(("E", clients)), by.get(("E1", clients))
        b0, c0 = by.get(("B0", clients)), by.get(("C0", clients))
        ratios = [f"B/A {b['tps'] / a['tps']:.2f}"]
        if b0:
            ratios.append(f"B/B0 {b['tps'] / b0['tps']:.2f} (SQL now / baseline)")
        if c and c0:
            ratios.append(f"C/C0 {c['tps'] / c0['tps']:.2f} (HTTP now / baseline)")
        if c and d:
            ratios += [f"C/A {c['tps'] / a['tps']:.2f}", f"D/A {d['tps'] / a['tps']:.2f}",
                       f"C/B {c['tps'] / b['tps']:.2f}"]
        if c and c1:
            ratios.append(f"C/C1 {c['tps'] / c1['tps']:.2f} (group commit on/off)")
        if e and e1:
            ratios.append(f"E/E1 {e['tps'] / e1['tps']:.2f}")
        lines.append(f"- at {clients} clients: " + ", ".join(ratios))
    lines.append(f"- server peak RSS over the whole run of one process (10,000 logins, then the C, D and "
                 f"E rows): {peak_rss:.0f} MiB ({login_peak_rss:.0f} MiB after the logins)")
    lines.append("- ledger invariants after the run: " + ("hold" if not problems else "; ".join(problems)))
    table = "\n".join(lines)
    print(table)

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, "
               f"{psql(url, 'SHOW server_version')} (PostgreSQL), Linux {platform.release()}")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = results / f"{stamp}.md"
    out.write_text(f"# make bench, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
                   f"Machine: {machine}. {args.seconds} s per row after {args.warmup} s of warm-up.\n\n"
                   f"{table}\n")
    print(f"bench: written to {out.relative_to(ROOT)}")
    if problems:
        sys.exit("bench: ledger invariants broken")


if __name__ == "__main__":
    main()
