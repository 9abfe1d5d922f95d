#!/usr/bin/env python3
"""`make bench`: how fast a transfer is, measured side by side in one run against one PostgreSQL.

Rows:
  Y1 and Y16, the yardsticks: a transfer as one bare SQL statement, and sixteen in one
     statement, on tables of their own shaped like simple_bank's (schema `bare`): lock both
     accounts in id order, check funds, insert the transfer and two entries, update both
     balances; no trigger, no function, no event. Written once and never changed with the
     project's SQL, so every other row is stated as a ratio to them.
  A  simple_bank's SQL: pgbench replaying, per transfer, the statements simple_bank's Go server
     sends (read from-account, read to-account, BEGIN, insert transfer, insert two entries, two
     `balance = balance + x` updates in ascending id order, COMMIT: nine round trips, prepared),
     on a copy of simple_bank's tables in schema `sb`.
  B  our transfer SQL: pgbench running exactly the statement our server sends for one transfer
     (MOVE_MONEY, printed by `simplebank-loadgen sql` from the server's own constant).
  B16 our batch SQL: 16 random transfers through `move_money_batch`, exactly as group commit
     sends a batch (MOVE_MONEY_BATCH, printed the same way).
  C  our HTTP API, D  our gRPC API: the release server under `simplebank-loadgen` (Rust,
     keep-alive connections, every request authenticated as the from-account's owner, random
     from/to accounts), counting only 2xx / OK;
  E  hot pair: C with every transfer between the same two accounts, both directions.
  C1, D1 and E1: C, D and E against a second server started with GROUP_COMMIT=false (one
     database transaction per transfer), to show what group commit itself is worth. Both servers
     run side by side; at each concurrency every C, D and E row is measured in slices (four by
     default, `--pairs 2`), in mirrored order (C C1 D D1 E E1, then E1 E D1 D C1 C, and again),
     and each row's figures are over all its slices (percentiles from every latency), so drift
     on the shared machine falls on all alike.
  B0 and C0: B and C for a baseline revision (`--baseline`, the Makefile's BENCH_BASELINE: the
     last commit before holds), its MOVE_MONEY under pgbench and its release binary, built from
     `git archive` into target/bench-baseline, over the same database: what the checks added
     since (holds' `held`, account status, overdraft) cost the transfer path. Each runs before
     its counterpart, so a table grown by the earlier rows counts against the new code.
All on 10,000 funded accounts whose users are all logged in, at concurrency 1, 4, 16, 64 and 256
(E, E1, B0 and C0 at 16 and 64 only; Y16 and B16 up to 64), each for a fixed time after a warm-up run. For each row the
CPU time of the server, of the whole PostgreSQL cluster and of the load generator, from /proc over
the measured run, is divided by the transfers it moved; round trips per transfer are counted by
the server (`db_money_*_calls_total`) or, for pgbench, are those of its script. Afterwards the
ledger invariants are checked; the table, the ratios, and every target of issues 36 and 21 as
met or missed go to stdout and bench/results/.

This is not a test and never runs in `make test`. Ratios between rows of the same run are the
result; absolute numbers depend on the machine and on whatever else it is doing.
"""

import argparse
import collections
import datetime
import json
import math
import signal
import urllib.request
import os
import pathlib
import platform
import re
import resource
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
    psql(url, BARE_TABLES.format(first=FIRST_ID, last=last, balance=BALANCE))
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


def pick_many(size):
    """`size` random (from, to) pairs as pgbench variables :f0 :t0 … : the lines that set them,
    and the two lists of variables."""
    picks = "".join(f"\\set f{i} random({FIRST_ID}, {FIRST_ID + ACCOUNTS - 1})\n"
                    f"\\set t{i} random({FIRST_ID}, {FIRST_ID + ACCOUNTS - 2})\n"
                    f"\\if :t{i} >= :f{i}\n\\set t{i} :t{i} + 1\n\\endif\n"
                    for i in range(size))
    return (picks, ", ".join(f":f{i}" for i in range(size)),
            ", ".join(f":t{i}" for i in range(size)))

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


# The yardsticks, Y1 and Y16: a transfer as one bare statement, and sixteen in one statement, on
# tables of their own shaped like simple_bank's (schema `bare`). Written once and never changed
# with the project's SQL, so that the cost of every feature of ours shows as a ratio to them.
# Each locks its accounts in ascending id order, checks the payer's funds, inserts the transfers
# and their two entries and updates the balances; no trigger, no function, no event.
BARE_TABLES = """
    CREATE SCHEMA bare;
    CREATE TABLE bare.accounts (id bigint PRIMARY KEY, owner text NOT NULL,
        balance bigint NOT NULL, currency text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now());
    CREATE UNIQUE INDEX ON bare.accounts (owner, currency);
    CREATE TABLE bare.transfers (id bigserial PRIMARY KEY,
        from_account_id bigint NOT NULL REFERENCES bare.accounts (id),
        to_account_id bigint NOT NULL REFERENCES bare.accounts (id),
        amount bigint NOT NULL CHECK (amount > 0), created_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE bare.entries (id bigserial PRIMARY KEY,
        account_id bigint NOT NULL REFERENCES bare.accounts (id),
        transfer_id bigint NOT NULL REFERENCES bare.transfers (id),
        amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
    CREATE INDEX ON bare.entries (account_id, id);
    INSERT INTO bare.accounts (id, owner, balance, currency)
        SELECT g, g::text, {balance}, 'USD' FROM generate_series({first}, {last}) g;
"""

BARE_ONE = PICK + f"\\set amount {AMOUNT}\n" + " ".join([
    "WITH p AS (SELECT :from::bigint AS f, :to::bigint AS t, :amount::bigint AS amount),",
    "locked AS MATERIALIZED (SELECT id, balance FROM bare.accounts WHERE id IN (:from, :to)",
    "ORDER BY id FOR NO KEY UPDATE),",
    "t AS (INSERT INTO bare.transfers (from_account_id, to_account_id, amount)",
    "SELECT p.f, p.t, p.amount FROM p, locked WHERE id = p.f AND balance >= p.amount RETURNING id),",
    "e AS (INSERT INTO bare.entries (account_id, transfer_id, amount)",
    "SELECT p.f, t.id, -p.amount FROM p, t UNION ALL SELECT p.t, t.id, p.amount FROM p, t),",
    "u AS (UPDATE bare.accounts a SET balance = l.balance",
    "+ CASE WHEN a.id = p.f THEN -p.amount ELSE p.amount END FROM p, t, locked l WHERE a.id = l.id)",
    "SELECT id FROM t;\n"])


def bare_batch_script(size=16):
    """Y16: `size` random transfers in one statement, its own transaction (one round trip)."""
    picks, froms, tos = pick_many(size)
    return picks + (
        f"WITH pairs AS MATERIALIZED (SELECT * FROM unnest(ARRAY[{froms}]::bigint[], "
        f"ARRAY[{tos}]::bigint[]) WITH ORDINALITY AS p (f, t, n)), "
        "moves AS (SELECT f AS id, -{a}::bigint AS delta FROM pairs UNION ALL SELECT t, {a} FROM pairs), "
        "net AS (SELECT id, sum(delta)::bigint AS delta FROM moves GROUP BY id), "
        "locked AS MATERIALIZED (SELECT a.id, a.balance FROM bare.accounts a "
        "WHERE a.id IN (SELECT id FROM net) ORDER BY a.id FOR NO KEY UPDATE), "
        "funded AS (SELECT bool_and(l.balance + n.delta >= 0) AS ok FROM locked l JOIN net n USING (id)), "
        "t AS (INSERT INTO bare.transfers (from_account_id, to_account_id, amount) "
        "SELECT f, t, {a} FROM pairs, funded WHERE funded.ok ORDER BY n "
        "RETURNING id, from_account_id, to_account_id), "
        "e AS (INSERT INTO bare.entries (account_id, transfer_id, amount) "
        "SELECT from_account_id, id, -{a} FROM t UNION ALL SELECT to_account_id, id, {a} FROM t), "
        "u AS (UPDATE bare.accounts a SET balance = l.balance + n.delta FROM locked l JOIN net n "
        "USING (id), funded WHERE funded.ok AND a.id = l.id) "
        "SELECT count(*) FROM t;\n").format(a=AMOUNT)


def statement(name):
    """One of the money path's statements exactly as the server sends it (the load generator
    prints it from the same constant), so a row of ours cannot drift from the code."""
    return subprocess.run([LOADGEN, "sql", name], check=True, capture_output=True,
                          text=True).stdout.strip()


def our_transfer_script(source=None):
    """B: MOVE_MONEY exactly as the server sends it, its $n bound to pgbench variables (B0: the
    baseline revision's, from `source`)."""
    if source is None:
        sql = statement("move-money")
    else:
        found = re.search(r'const MOVE_MONEY: &str =\s*(?:r#"(.*?)"#|"(.*?)");', source, re.S)
        sql = found.group(1) or found.group(2)
    # $1 from, $2 to, $3 amount, $4 currency, $5 movement, $6 owner (the from-account's owner,
    # whose username is the account id); then (none here) $7 the hold a capture names, $8 the
    # reference, $9 the metadata, $10 the transfer a reversal reverses. sqlx declares each
    # parameter's type in its Parse message; pgbench declares none, so the same types are
    # written as casts. A baseline's statement has only the parameters it had.
    values = {1: ":from::bigint", 2: ":to::bigint", 3: ":amount::bigint", 4: ":currency::text",
              5: ":movement::text", 6: ":owner::text", 7: "NULL::bigint", 8: "NULL::text",
              9: "NULL::text", 10: "NULL::bigint"}
    sql = re.sub(r"\$(\d+)\b", lambda m: values[int(m.group(1))], sql)
    body = " ".join(line.split("--")[0].strip() for line in sql.strip().splitlines())
    # pgbench's \\set is numeric only: the text parameters come from -D (see `pgbench`).
    return PICK + f"\\set amount {AMOUNT}\n\\set owner :from\n" + body + ";\n"


def our_batch_script(size=16):
    """B16: `size` random transfers through `move_money_batch`, exactly as group commit sends a
    batch (MOVE_MONEY_BATCH): one statement, its own transaction."""
    sql = statement("move-money-batch")
    picks, froms, tos = pick_many(size)
    # $1 from ids, $2 to ids, $3 amounts, $4 currencies, $5 kinds, $6 owners (each from-account's
    # owner is named by its id), $7 references, $8 metadata.
    values = {1: f"ARRAY[{froms}]::bigint[]", 2: f"ARRAY[{tos}]::bigint[]",
              3: f"array_fill({AMOUNT}::bigint, ARRAY[{size}])",
              4: f"array_fill('USD'::text, ARRAY[{size}])",
              5: f"array_fill('transfer'::text, ARRAY[{size}])",
              6: f"ARRAY[{froms}]::text[]",
              7: f"array_fill(NULL::text, ARRAY[{size}])",
              8: f"array_fill(NULL::text, ARRAY[{size}])"}
    sql = re.sub(r"\$(\d+)\b", lambda m: values[int(m.group(1))], sql)
    return picks + sql + ";\n"


def settle(url):
    """Before each row: vacuum what the previous rows left behind and flush dirty pages, so no row
    pays for another's dead tuples or checkpoint."""
    psql(url, "VACUUM (ANALYZE) accounts, transfers, entries, events, sb.accounts, sb.transfers, "
              "sb.entries, bare.accounts, bare.transfers, bare.entries")
    try:
        psql(url, "CHECKPOINT")
    except subprocess.CalledProcessError:
        pass  # not a superuser (a DB_SOURCE of your own): rows then share checkpoints by chance


def pgbench(url, script, clients, seconds, warmup, log_dir, tag, cpu, per_transaction=1):
    """One pgbench row. `per_transaction` transfers per script run: transfers/s is pgbench's tps
    times that, latencies are per transaction."""
    settle(url)
    path = pathlib.Path(log_dir) / f"{tag}.sql"
    path.write_text(script)
    common = [pg_bin("pgbench"), "-n", "-M", "prepared", "-c", str(clients),
              "-j", str(min(clients, 4)), "-D", "currency=USD", "-D", "movement=transfer",
              "-f", str(path)]
    if per_transaction > 1:
        common += ["--max-tries", "10"]
    subprocess.run(common + ["-T", str(warmup), url], check=True, capture_output=True)
    prefix = pathlib.Path(log_dir) / tag
    before = cpu.sample()
    run = subprocess.run(common + ["-T", str(seconds), "-l", "--log-prefix", str(prefix), url],
                         check=True, capture_output=True, text=True, cwd=log_dir)
    used = cpu.since(before)
    tps = per_transaction * float(
        re.search(r"tps = ([\d.]+) \(without initial connection time\)", run.stdout).group(1))
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
    return {"tps": tps, "p50": p50, "p99": p99, "failed": failed,
            **used.per_transfer(tps * seconds)}


class Cpu:
    """CPU time (user + system) of the server under test, of the whole PostgreSQL cluster
    (postmaster, its live children, and the children it has reaped), and of the load generator
    (this script's reaped children), read from /proc between two samples."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, url):
        # The postmaster's pid is the first line of postmaster.pid in the data directory (which
        # only a superuser may ask for; without it the PostgreSQL column stays empty).
        try:
            data = psql(url, "SHOW data_directory")
            self.postmaster = int((pathlib.Path(data) / "postmaster.pid").read_text().split()[0])
        except (subprocess.CalledProcessError, OSError):
            self.postmaster = None
        self.server = None

    @staticmethod
    def _stat(pid):
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command: state ppid ... utime(14) stime(15) cutime(16) cstime(17).
        return {"ppid": int(fields[1]), "own": int(fields[11]) + int(fields[12]),
                "reaped": int(fields[13]) + int(fields[14])}

    def _postgres(self):
        if self.postmaster is None:
            return 0
        total = sum(self._stat(self.postmaster)[k] for k in ("own", "reaped"))
        for child in pathlib.Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children") \
                .read_text().split():
            try:
                total += self._stat(int(child))["own"]
            except (FileNotFoundError, ProcessLookupError):
                pass  # exited between the listing and the read: counted as reaped next time
        return total

    def sample(self):
        server = self._stat(self.server)["own"] if self.server else 0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (server, self._postgres(), children.ru_utime + children.ru_stime)

    def since(self, before):
        now = self.sample()
        return CpuUsed(server=(now[0] - before[0]) / self.TICK if self.server else None,
                       postgres=(now[1] - before[1]) / self.TICK if self.postmaster else None,
                       load=now[2] - before[2])


class CpuUsed:
    def __init__(self, server, postgres, load):
        self.server, self.postgres, self.load = server, postgres, load

    def per_transfer(self, transfers):
        """Microseconds per transfer of each party."""
        us = lambda seconds: None if seconds is None or not transfers else seconds * 1e6 / transfers
        return {"cpu_server": us(self.server), "cpu_pg": us(self.postgres), "cpu_load": us(self.load)}


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
            LOGIN_ATTEMPTS_PER_IP="0", LOGIN_FAILURES_PER_USERNAME="0",
            # The hot-pair rows send every transfer as one of two users, at thousands a second:
            # far past one user's fair share, which is what the rows measure around.
            USER_MAX_CONCURRENT_REQUESTS="100000", USER_REQUESTS_PER_SECOND="1000000", **settings)
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


def scrape(server):
    """The server's money-path call counters and committed transfers, from /metrics."""
    text = urllib.request.urlopen(f"{server.http}/metrics", timeout=30).read().decode()
    def value(pattern):
        found = re.search(pattern + r" (\d+(?:\.\d+)?(?:e[+-]?\d+)?)\n", text)
        return float(found.group(1)) if found else 0.0
    return {"single": value(r"db_money_single_calls_total"),
            "batches": value(r"db_money_batch_calls_total"),
            "batched": value(r"db_money_batched_movements_total"),
            "committed": value(r'money_movements_total\{kind="transfer",outcome="committed"\}'),
            "text": text}


def loadgen(api, server, tokens, clients, seconds, warmup, cpu, hot=False, db=None):
    """One part of a row against `server`: a warm-up run, then the measured run, with the CPU of
    server, PostgreSQL and load generator and the server's database calls counted over the
    latter. Raw sums, so that `combine` can merge the parts of a row exactly."""
    if db:
        settle(db)
    target = server.http if api == "http" else server.grpc
    command = [LOADGEN, "run", "--api", api, "--url", target, "--tokens", tokens,
               "--concurrency", str(clients)]
    if hot:
        command.append("--hot")
    subprocess.run(command + ["--seconds", str(warmup), "--warmup", "0"], check=True,
                   capture_output=True)
    cpu.server = server.process.pid
    calls = scrape(server)
    before = cpu.sample()
    with tempfile.NamedTemporaryFile("r", suffix=".latencies") as latencies:
        out = subprocess.run(command + ["--seconds", str(seconds), "--warmup", "0",
                                        "--latencies", latencies.name],
                             check=True, capture_output=True, text=True).stdout
        taken = [int(line) for line in latencies.read().split()]
    used = cpu.since(before)
    after = scrape(server)
    report = json.loads(out.strip().splitlines()[-1])
    # A server without the call counters (a baseline older than them) leaves the column empty.
    counted = "db_money_single_calls" in after["text"]
    delta = lambda key: after[key] - calls[key]
    return {"seconds": seconds, "latencies": taken, "errors": report["errors"],
            "moved": delta("committed"), "counted": counted,
            "trips": delta("single") + delta("batches"), "batches": delta("batches"),
            "batched": delta("batched"), "used": used}


def slice_seconds(seconds, pairs):
    """A row's measured `seconds` cut into `pairs` mirrored pairs of whole-second slices (fewer
    pairs if there are not enough seconds), the two slices of a pair equally long, so each order
    gets the same time: 10 s in 2 pairs is 3 3 2 2. An odd second goes to the last slice."""
    half = max(seconds // 2, 1)
    pairs = max(1, min(pairs, half))
    lengths = [half // pairs + (1 if i < half % pairs else 0) for i in range(pairs)]
    cut = [length for length in lengths for _ in (0, 1)]
    cut[-1] += max(seconds - 2 * half, 0)
    return cut


def combine(parts):
    """One row's result from its parts: throughput, percentiles, calls and CPU over all of them."""
    latencies = sorted(x for part in parts for x in part["latencies"])
    percentile = lambda p: float("nan") if not latencies else \
        latencies[max(math.ceil(len(latencies) * p) - 1, 0)] / 1000
    errors = collections.Counter()
    for part in parts:
        errors.update(part["errors"])
    total = lambda key: sum(part[key] for part in parts)
    moved, batches = total("moved"), total("batches")
    counted = all(part["counted"] for part in parts)
    cpu_sum = lambda attr: None if any(getattr(p["used"], attr) is None for p in parts) \
        else sum(getattr(p["used"], attr) for p in parts)
    used = CpuUsed(cpu_sum("server"), cpu_sum("postgres"), cpu_sum("load"))
    return {"tps": len(latencies) / total("seconds"), "p50": percentile(0.50),
            "p99": percentile(0.99), "failed": sum(errors.values()), "errors": dict(errors),
            "trips": total("trips") / moved if counted and moved else None,
            "batch": total("batched") / batches if batches else None,
            **used.per_transfer(moved)}


def check_invariants(url):
    broken = psql(url, """
        SELECT count(*) FROM accounts a
        WHERE a.balance <> (SELECT coalesce(sum(amount), 0) FROM entries e WHERE e.account_id = a.id)
    """)
    total = psql(url, "SELECT coalesce(sum(balance), 0) FROM accounts WHERE currency = 'USD'")
    negative = psql(url, "SELECT count(*) FROM accounts WHERE kind = 'customer' "
                         "AND balance < -overdraft_limit")
    sb_total = psql(url, "SELECT sum(balance) FROM sb.accounts")
    bare_total = psql(url, "SELECT sum(balance) FROM bare.accounts")
    problems = []
    if broken != "0":
        problems.append(f"{broken} accounts whose balance is not the sum of their entries")
    if total != "0":
        problems.append(f"USD does not sum to zero: {total}")
    if negative != "0":
        problems.append(f"{negative} customer balances below minus their overdraft limit")
    if int(sb_total) != BALANCE * ACCOUNTS:
        problems.append(f"simple_bank's copy lost money: {sb_total}")
    if int(bare_total) != BALANCE * ACCOUNTS:
        problems.append(f"the yardsticks' tables lost money: {bare_total}")
    return problems


def fmt(value, digits=0):
    return "–" if value is None else f"{value:.{digits}f}"


def yardstick_verdicts(by, clients_list):
    """Issue 36's targets, each met or missed, stated against the yardsticks Y1 and Y16."""
    lines = []

    def check(name, ok, figure):
        lines.append(f"- {'met' if ok else 'MISSED'}: {name} ({figure})")

    def best(row):
        found = [(by[k]["tps"], k[1]) for k in by if k[0] == row]
        return max(found) if found else (None, None)

    b, y1 = by.get(("B", 16)), by.get(("Y1", 16))
    if b and y1 and b["cpu_pg"] and y1["cpu_pg"]:
        ratio = b["cpu_pg"] / y1["cpu_pg"]
        check("PostgreSQL CPU per transfer ≤ 1.5 × Y1's at 16 clients (B / Y1)", ratio <= 1.5,
              f"{b['cpu_pg']:.0f} / {y1['cpu_pg']:.0f} µs = {ratio:.2f}")
    (b16, b16_at), (y16, y16_at) = best("B16"), best("Y16")
    if b16 and y16:
        check("move_money_batch of 16 ≥ 0.8 × Y16, each at its best concurrency", b16 >= 0.8 * y16,
              f"{b16:.0f}/s at {b16_at} / {y16:.0f}/s at {y16_at} = {b16 / y16:.2f}")
    c64, c16 = by.get(("C", 64)), by.get(("C", 16))
    if c64 and y16:
        check("HTTP at 64 clients ≥ 0.6 × Y16 at its best", c64["tps"] >= 0.6 * y16,
              f"{c64['tps']:.0f} / {y16:.0f} = {c64['tps'] / y16:.2f}")
    if c16 and y1:
        check("HTTP at 16 clients ≥ 0.8 × Y1 at 16", c16["tps"] >= 0.8 * y1["tps"],
              f"{c16['tps']:.0f} / {y1['tps']:.0f} = {c16['tps'] / y1['tps']:.2f}")
    if c64:
        check("HTTP p99 ≤ 2 × p50 at 64 clients", c64["p99"] <= 2 * c64["p50"],
              f"{c64['p99']:.1f} / {c64['p50']:.1f} ms = {c64['p99'] / c64['p50']:.2f}")
    levels = [(c, by[("C", c)]["tps"], by[("D", c)]["tps"]) for c in clients_list
              if ("C", c) in by and ("D", c) in by]
    if levels:
        check("gRPC within 10% of HTTP at every concurrency (D / C)",
              all(0.9 <= d / c <= 1.1 for _, c, d in levels),
              ", ".join(f"{n}: {d / c:.2f}" for n, c, d in levels))
    trips = [by[k]["trips"] for k in by if k[0] == "C1" and by[k].get("trips")]
    if trips:
        check("an unkeyed transfer in 1 round trip (C1, one transaction per transfer)",
              max(trips) <= 1.0, f"{max(trips):.2f}")
    return lines


def verdicts(by, clients_list, peak_rss):
    """Issue 21's targets, each met or missed, from this run's rows."""
    lines = []

    def tps(row, clients):
        found = by.get((row, clients))
        return found["tps"] if found else None

    def check(name, ok, figure):
        lines.append(f"- {'met' if ok else 'MISSED'}: {name} ({figure})")

    pairs = [(c, tps("C", c), tps("C1", c), tps("D", c), tps("D1", c)) for c in clients_list]
    figure = ", ".join(f"{c}: C/C1 {fmt(a / b if a and b else None, 2)}, D/D1 "
                       f"{fmt(d / d1 if d and d1 else None, 2)}" for c, a, b, d, d1 in pairs)
    check("group commit never loses, C ≥ C1 and D ≥ D1 at every concurrency",
          all(a and b and d and d1 and a >= b and d >= d1 for _, a, b, d, d1 in pairs), figure)
    if 16 in clients_list and tps("B", 16) and tps("C", 16):
        ratio = tps("C", 16) / tps("B", 16)
        check("C/B ≥ 0.8 at 16 clients", ratio >= 0.8, f"{ratio:.2f}")
    if 1 in clients_list and by.get(("B", 1)) and by.get(("C", 1)):
        ratio = by[("C", 1)]["p50"] / by[("B", 1)]["p50"]
        check("C's p50 ≤ 1.5 × B's at 1 client", ratio <= 1.5,
              f"{by[('C', 1)]['p50']:.2f} / {by[('B', 1)]['p50']:.2f} ms = {ratio:.2f}")
    figure = ", ".join(f"{c}: D/C {fmt(d / a if a and d else None, 2)}" for c, a, _, d, _ in pairs)
    check("gRPC at least as fast as HTTP, D ≥ C at every concurrency",
          all(a and d and d >= a for _, a, _, d, _ in pairs), figure)
    if 64 in clients_list and tps("B", 64) and tps("C", 64):
        ratio = tps("C", 64) / tps("B", 64)
        check("C/B ≥ 2.0 at 64 clients", ratio >= 2.0, f"{ratio:.2f}")
        p99 = [by[(r, 64)]["p99"] for r in ("C", "D") if (r, 64) in by]
        check("p99 ≤ 10 ms for C and D at 64 clients", all(x <= 10 for x in p99),
              ", ".join(f"{x:.1f} ms" for x in p99))
        b16 = max((by[k]["tps"] for k in by if k[0] == "B16"), default=None)
        if b16:
            ratio = tps("C", 64) / b16
            check("moonshot: C at 64 clients ≥ 0.6 × B16 at its best", ratio >= 0.6,
                  f"{tps('C', 64):.0f} / {b16:.0f} = {ratio:.2f}")
    if 256 in clients_list and 64 in clients_list and by.get(("C", 256)):
        errors = sum(by[(r, 256)]["failed"] for r in ("C", "D", "C1", "D1") if (r, 256) in by)
        ok = errors == 0 and all(tps(r, 256) and tps(r, 64) and tps(r, 256) >= tps(r, 64)
                                 for r in ("C", "D"))
        check("256 clients: no error, throughput ≥ the 64-client figure (C, D)", ok,
              f"errors {errors}; C {fmt(tps('C', 256))} vs {fmt(tps('C', 64))}, "
              f"D {fmt(tps('D', 256))} vs {fmt(tps('D', 64))}")
    check("server peak RSS over the whole run ≤ 64 MiB", peak_rss <= 64, f"{peak_rss:.0f} MiB")
    return lines


def main():
    global BINARY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="measured time per row")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clients", default="1,4,16,64,256")
    parser.add_argument("--rows", help="only these rows, e.g. B,C,C1 (default: all)")
    parser.add_argument("--binary", default=str(BINARY), help="the simplebank binary to migrate with")
    parser.add_argument("--baseline", help="a git revision to measure rows B0 and C0 for")
    parser.add_argument("--pairs", type=int, default=2,
                        help="mirrored pairs of slices each C, D and E row is measured in")
    args = parser.parse_args()
    BINARY = pathlib.Path(args.binary)
    wanted = set(args.rows.split(",")) if args.rows else None
    want = lambda name: wanted is None or name.split()[0] in wanted
    base = os.environ.get("DB_SOURCE") or sys.exit("DB_SOURCE must be set (make bench sets it)")
    base_rev, base_source, base_binary = baseline(args.baseline) \
        if args.baseline and (wanted is None or wanted & {"B0", "C0"}) else (None, None, None)
    print("bench: seeding 10,000 funded accounts (ours and simple_bank's copy)", flush=True)
    url = setup(base)
    cpu = Cpu(url)
    clients_list = [int(c) for c in args.clients.split(",")]
    # The rows every concurrency gets; the others only where they say something new.
    pair_levels = [c for c in clients_list if c in (16, 64)] or clients_list[:1]
    rows = []

    def record(name, clients, result):
        rows.append((name, clients, result))
        print(f"bench:   {result['tps']:.0f}/s p50 {result['p50']:.2f} ms p99 "
              f"{result['p99']:.2f} ms", flush=True)

    with tempfile.TemporaryDirectory() as logs:
        for clients in clients_list:
            scripts = [("A simple_bank SQL", SIMPLE_BANK, 1, 9),
                       ("Y1 yardstick: bare statement", BARE_ONE, 1, 1)]
            if base_rev and clients in pair_levels:
                scripts.append((f"B0 baseline SQL ({base_rev})", our_transfer_script(base_source), 1, 1))
            scripts.append(("B our transfer SQL", our_transfer_script(), 1, 1))
            if clients <= 64:
                scripts += [("Y16 yardstick: bare statement, 16 at once", bare_batch_script(16),
                             16, 1 / 16),
                            ("B16 our move_money_batch of 16", our_batch_script(16), 16, 1 / 16)]
            for name, script, per, trips in scripts:
                if not want(name):
                    continue
                print(f"bench: {name} at {clients} clients, {args.seconds} s", flush=True)
                result = pgbench(url, script, clients, args.seconds, args.warmup, logs,
                                 name.split()[0] + f"_{clients}", cpu, per)
                result["trips"] = trips
                record(name, clients, result)
        # One process for the logins and the measured rows: its peak RSS (the kernel's VmHWM)
        # covers the whole run, 10,000 argon2 logins included — the figure a pod's memory limit
        # must hold, so nothing is left out by a restart.
        print("bench: starting the release server and logging 10,000 users in", flush=True)
        server = Server(url, ROOT / "target" / "bench-server.log")
        try:
            tokens = log_everyone_in(url, server, logs)
            login_peak_rss = server.peak_rss_mib()
            if base_rev and want("C0"):
                # The baseline first (the server above idles meanwhile): the same tokens, the
                # same database, its own binary.
                old = Server(url, ROOT / "target" / "bench-server-baseline.log", base_binary)
                try:
                    for clients in pair_levels:
                        name = f"C0 baseline HTTP ({base_rev})"
                        print(f"bench: {name} at {clients} clients, {args.seconds} s", flush=True)
                        record(name, clients, combine([loadgen(
                            "http", old, tokens, clients, args.seconds, args.warmup, cpu, False,
                            url)]))
                finally:
                    old.stop()
            # Group commit on and off side by side: the second server starts now and idles
            # while the first is measured. At each concurrency every row runs in slices, in
            # mirrored order (C C1 D D1 E E1, then E1 E D1 D C1 C, repeated `--pairs` times), so
            # that drift in what the shared machine is doing falls on every row alike. Run in
            # one order only, an A/A test (both servers GROUP_COMMIT=false) gave the row
            # measured first 0.75 of the other at 4 clients: the order, not the code, decided
            # such ratios. Mirrored halves fixed the order; more, shorter slices also shorten
            # the cycle over which a minute of the machine's drift can favour one row (the
            # machine's speed moves by a third between minutes). A row's first slice has the
            # full warm-up; later ones 1 s, for the load generator's new connections.
            nogroup = Server(url, ROOT / "target" / "bench-server-nogroup.log", GROUP_COMMIT="false")
            try:
                for clients in clients_list:
                    level = [(name, target, api, hot) for name, target, api, hot in [
                            ("C our HTTP API", server, "http", False),
                            ("C1 HTTP, GROUP_COMMIT=false", nogroup, "http", False),
                            ("D our gRPC API", server, "grpc", False),
                            ("D1 gRPC, GROUP_COMMIT=false", nogroup, "grpc", False),
                            ("E hot pair (HTTP)", server, "http", True),
                            ("E1 hot pair, GROUP_COMMIT=false", nogroup, "http", True)]
                             if want(name) and not (hot and clients not in pair_levels)]
                    slices = {name: [] for name, *_ in level}
                    for index, seconds in enumerate(slice_seconds(args.seconds, args.pairs)):
                        order = level if index % 2 == 0 else level[::-1]
                        warmup = args.warmup if index == 0 else min(args.warmup, 1)
                        for name, target, api, hot in order:
                            print(f"bench: {name} at {clients} clients, {seconds} s", flush=True)
                            slices[name].append(loadgen(api, target, tokens, clients, seconds,
                                                        warmup, cpu, hot, url))
                    for name, *_ in level:
                        record(name, clients, combine(slices[name]))
            finally:
                nogroup.stop()
            peak_rss = server.peak_rss_mib()
        finally:
            server.stop()
    problems = check_invariants(url)

    lines = ["| row | clients | transfers/s | p50 ms | p99 ms | errors | round trips / transfer "
             "| mean batch | server µs / transfer | PostgreSQL µs / transfer | load generator µs / transfer |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, clients, r in sorted(rows, key=lambda row: (row[1], row[0])):
        errors = ", ".join(f"{code} {n}" for code, n in sorted(r.get("errors", {}).items())) \
            or str(r["failed"])
        lines.append(f"| {name} | {clients} | {r['tps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{errors} | {fmt(r.get('trips'), 2)} | {fmt(r.get('batch'), 1)} | "
                     f"{fmt(r['cpu_server'])} | {fmt(r['cpu_pg'])} | {fmt(r['cpu_load'])} |")
    by = {(name.split()[0], clients): r for name, clients, r in rows}
    lines.append("")
    for clients in sorted({c for _, c, _ in rows}):
        get = lambda row: by.get((row, clients), {}).get("tps")
        ratios = []
        for label, top, bottom in [("B/Y1", "B", "Y1"), ("B16/Y16", "B16", "Y16"), ("C/Y1", "C", "Y1"),
                                   ("B/A", "B", "A"), ("B/B0", "B", "B0"), ("C/C0", "C", "C0"),
                                   ("C/A", "C", "A"), ("C/B", "C", "B"), ("D/C", "D", "C"),
                                   ("C/C1", "C", "C1"), ("D/D1", "D", "D1"), ("E/E1", "E", "E1")]:
            if get(top) and get(bottom):
                ratios.append(f"{label} {get(top) / get(bottom):.2f}")
        lines.append(f"- at {clients} clients: " + ", ".join(ratios))
    if any(k[0] == "C" for k in by):
        lines.append(f"- server peak RSS over the whole run of one process (10,000 logins, then the "
                     f"C, D and E rows): {peak_rss:.0f} MiB ({login_peak_rss:.0f} MiB after the logins)")
    lines.append("- ledger invariants after the run: " + ("hold" if not problems else "; ".join(problems)))
    if wanted is None:
        lines += ["", "Targets against the yardsticks (issue 36):"] + yardstick_verdicts(by, clients_list)
        lines += ["", "Targets (issue 21):"] + verdicts(by, clients_list, peak_rss)
    table = "\n".join(lines)
    print(table)

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, "
               f"{psql(url, 'SHOW server_version')} (PostgreSQL), Linux {platform.release()}")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    # A second run on the same day gets its own file instead of replacing the first.
    out = results / f"{stamp}.md"
    runs = 1
    while out.exists():
        runs += 1
        out = results / f"{stamp}-{runs}.md"
    if wanted is None:
        out.write_text(f"# make bench, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
                       f"Machine: {machine}. {args.seconds} s per row after {args.warmup} s of warm-up "
                       f"(C, D and E rows: in {len(slice_seconds(args.seconds, args.pairs))} slices, mirrored; a row's first slice after the warm-up, later ones after 1 s).\n\n"
                       f"{table}\n")
        print(f"bench: written to {out.relative_to(ROOT)}")
    if problems:
        sys.exit("bench: ledger invariants broken")


if __name__ == "__main__":
    main()
