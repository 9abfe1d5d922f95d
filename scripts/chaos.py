#!/usr/bin/env python3
"""`make chaos`: three replicas over a failing-over PostgreSQL, attacked one fault at a time.

Starts the stack of scripts/cluster.py (etcd, Patroni ×3 with synchronous replication, HAProxy in
front of the database and in front of three release servers), then runs transfer load through the
front balancer, HTTP and gRPC, keyed and unkeyed, while it breaks one thing at a time:

  leader-kill     SIGKILL the PostgreSQL leader's Patroni and postmaster (a machine lost); Patroni
                  promotes the synchronous standby; the old node rejoins as a standby afterwards
  switchover      a planned switchover through Patroni's REST API
  replica-kill    SIGKILL one API replica, start it again
  replica-stop    SIGSTOP one API replica for 10 s, then SIGCONT
  replica-cut     one replica cut off from the database (its balancer listener paused, its sessions
                  cut) for 8 s: it must report not ready and leave the rotation, then come back
  rolling         SIGTERM and restart every replica in turn, each back in rotation before the next

Every request carries a unique `reference`, so the database itself tells how many transfers each
one made. Keyed clients keep a key until it has a definite answer (what a careful client does);
unkeyed ones never retry. After each fault the stack must be whole again (leader elected, a
synchronous standby streaming, every replica in rotation — observed, not slept), and at the end:

  - every transfer a client saw acknowledged is in the new leader's database, once;
  - no request made two transfers (keyed or not: no batch ran twice), each key's record names
    the one transfer its client saw, and the ledger invariants hold;
  - the only errors were 503 `unavailable` / UNAVAILABLE, and no answer took past the balancer's
    timeout;
  - each sign-up's verification email was written once, and each transfer.created event
    reached the webhook receiver (how many twice is reported: delivery is at least once).

Prints the table doc/reliability.md quotes; exits non-zero on any violation.

    scripts/chaos.py                                 every fault once, in the order above
    scripts/chaos.py --faults rolling --repeat 20    one fault (or a comma-separated few), N times
"""

import argparse
import collections
import http.server
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cluster  # noqa: E402  (scripts/cluster.py: the stack and its handles)
import ledger_checks  # noqa: E402

CUSTOMERS = 8
FUNDS = 1_000_000
SERVICE = "simplebank.v1.SimpleBank"
CLIENT_TIMEOUT_S = 15
FAILURES = []


def fail(message):
    print(f"chaos: FAIL {message}", flush=True)
    FAILURES.append(message)


def request(method, url, body=None, token=None, key=None, timeout=CLIENT_TIMEOUT_S):
    """(status, body); status 0 when there was no HTTP answer at all."""
    return ledger_checks.request(method, url, body, token, key, timeout)[:2]


class Answers:
    """Every answer any client got: (start, end, protocol, outcome), outcome 'ok', a code, or
    'refused: code' for a definite business refusal."""

    def __init__(self):
        self.lock = threading.Lock()
        self.log = []

    def add(self, started, ended, protocol, outcome):
        with self.lock:
            self.log.append((started, ended, protocol, outcome))

    def since(self, t0, t1=None):
        with self.lock:
            return [a for a in self.log if a[0] >= t0 and (t1 is None or a[0] < t1)]

    def successes_since(self, t0):
        return sum(1 for a in self.since(t0) if a[3] == "ok")


class Grpc:
    """CreateTransfer through the front balancer, its message classes found by reflection."""

    def __init__(self, target):
        self.target = target
        channel = grpc.insecure_channel(target)
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        method = pool.FindServiceByName(SERVICE).methods_by_name["CreateTransfer"]
        self.request_type = message_factory.GetMessageClass(method.input_type)
        self.reply_type = message_factory.GetMessageClass(method.output_type)
        self.status_type = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))
        self.info_type = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.ErrorInfo"))
        channel.close()

    def stub(self):
        channel = grpc.insecure_channel(self.target)
        return channel, channel.unary_unary(f"/{SERVICE}/CreateTransfer",
                                            request_serializer=self.request_type.SerializeToString,
                                            response_deserializer=self.reply_type.FromString)

    def table_code(self, error):
        """The SPEC §4 code in the ErrorInfo detail, or None (the balancer's own answers have none)."""
        trailers = dict(error.trailing_metadata() or [])
        if "grpc-status-details-bin" not in trailers:
            return None
        status = self.status_type.FromString(trailers["grpc-status-details-bin"])
        for detail in status.details:
            if detail.type_url.endswith("google.rpc.ErrorInfo"):
                return self.info_type.FromString(detail.value).metadata["code"]
        return None


class Load:
    """The clients, HTTP and gRPC, keyed and unkeyed, through the front balancer."""

    def __init__(self, state, customers, rpc, answers):
        front = state["front"]
        self.base = f"http://127.0.0.1:{front['http']}"
        self.rpc = rpc
        self.customers = customers
        self.answers = answers
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.keyed = {}           # key -> transfer id, or "refused: code"
        self.seen = collections.defaultdict(set)  # key -> every transfer id it was answered with
        self.acked = {}           # reference -> transfer id (every acknowledged transfer)
        self.in_doubt = 0         # unkeyed requests answered unavailable: may or may not exist
        self.details = {}         # gRPC outcome -> the first such error's message
        self.threads = []

    def attempt(self, protocol, me, to, amount, reference, key, grpc_stub):
        """One request; (outcome, transfer id or None). Outcomes: 'ok', 'refused: code', or an
        error label ('503 unavailable', 'UNAVAILABLE', 'timeout', ...)."""
        started = time.monotonic()
        if protocol == "http":
            status, answer = request("POST", f"{self.base}/v1/transfers",
                                     {"from_account_id": me["account"], "to_account_id": to["account"],
                                      "amount": amount, "currency": "USD", "reference": reference},
                                     me["token"], key)
            code = (answer or {}).get("error", {}).get("code") if isinstance(answer, dict) else None
            if status == 201:
                outcome, transfer = "ok", answer["transfer"]["id"]
            elif status == 422:
                outcome, transfer = f"refused: {code}", None
            else:
                outcome, transfer = (f"{status} {code}" if status else "no answer"), None
        else:
            metadata = [("authorization", f"Bearer {me['token']}")] + ([("idempotency-key", key)] if key else [])
            message = self.rpc.request_type(from_account_id=me["account"], to_account_id=to["account"],
                                            amount=amount, currency="USD", reference=reference)
            try:
                reply = grpc_stub(message, metadata=metadata, timeout=CLIENT_TIMEOUT_S)
                outcome, transfer = "ok", reply.transfer.id
            except grpc.RpcError as error:
                code = self.rpc.table_code(error)
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    outcome = f"refused: {code}"
                else:
                    outcome = error.code().name + (f" {code}" if code and code != error.code().name.lower() else "")
                transfer = None
                with self.lock:
                    self.details.setdefault(outcome, error.details())
        self.answers.add(started, time.monotonic(), protocol, outcome)
        return outcome, transfer

    def keyed_client(self, protocol, me):
        rng = random.Random(me["name"])
        channel, stub = self.rpc.stub() if protocol == "grpc" else (None, None)
        while not self.stop.is_set():
            key = str(uuid.uuid4())
            to = rng.choice([c for c in self.customers if c is not me])
            amount = rng.randint(1, 100)
            while True:  # the same key and body until a definite answer, even after stop is set
                outcome, transfer = self.attempt(protocol, me, to, amount, key, key, stub)
                if outcome == "ok":
                    with self.lock:
                        self.seen[key].add(transfer)
                        self.keyed[key] = transfer
                        self.acked[key] = transfer
                    break
                if outcome.startswith("refused: "):
                    with self.lock:
                        self.keyed[key] = outcome
                    break
                # Unavailable, no answer, in progress (409 / ABORTED): the same key again soon.
                time.sleep(0.2)
        if channel:
            channel.close()

    def unkeyed_client(self, protocol, n):
        rng = random.Random(1000 + n)
        channel, stub = self.rpc.stub() if protocol == "grpc" else (None, None)
        while not self.stop.is_set():
            a, b = rng.sample(self.customers, 2)
            reference = f"u-{uuid.uuid4()}"
            outcome, transfer = self.attempt(protocol, a, b, rng.randint(1, 50), reference, None, stub)
            with self.lock:
                if outcome == "ok":
                    self.acked[reference] = transfer
                elif not outcome.startswith("refused: "):
                    self.in_doubt += 1
            if outcome != "ok":
                time.sleep(0.2)
        if channel:
            channel.close()

    def begin(self):
        half = CUSTOMERS // 2
        self.threads = [threading.Thread(target=self.keyed_client, args=("http", c)) for c in self.customers[:half]]
        self.threads += [threading.Thread(target=self.keyed_client, args=("grpc", c)) for c in self.customers[half:]]
        self.threads += [threading.Thread(target=self.unkeyed_client, args=(p, n))
                         for n, p in enumerate(["http", "http", "grpc", "grpc"])]
        for thread in self.threads:
            thread.start()

    def end(self):
        ledger_checks.stop_clients(self.stop, self.threads, fail)


class SignUps:
    """A user signs up every 0.3 s through the front balancer; each must get one email."""

    def __init__(self, base, run):
        self.base, self.run = base, run
        self.created = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop)

    def loop(self):
        n = 0
        while not self.stop.is_set():
            name = f"cs_{self.run}_{n}"
            status, _ = request("POST", f"{self.base}/v1/users",
                                {"username": name, "full_name": "Chaos Signup",
                                 "email": f"{name}@example.com", "password": "password123"})
            if status == 201:
                self.created.append(f"{name}@example.com")
            n += 1
            self.stop.wait(0.3)


class Receiver:
    """A webhook endpoint on a free loopback port: counts deliveries per webhook-id."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deliveries = collections.Counter()
        self.first = {}  # webhook-id -> when its first delivery arrived
        self.again = []  # for each repeated delivery, when the first one of its id arrived
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    msg_id = self.headers.get("webhook-id")
                    receiver.deliveries[msg_id] += 1
                    if receiver.deliveries[msg_id] == 1:
                        receiver.first[msg_id] = time.monotonic()
                    else:
                        # Counted where the first delivery came: the repeat comes a lease later.
                        receiver.again.append(receiver.first[msg_id])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def db_url(state):
    """The application database through the balancer's first listener (always the leader)."""
    port = state["replicas"][0]["db_port"]
    return f"postgresql://{cluster.APP[0]}:{cluster.APP[1]}@127.0.0.1:{port}/{cluster.DATABASE}"


def psql(state, sql):
    return subprocess.run([f"{cluster.pg_bin()}/psql", db_url(state), "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                          check=True, capture_output=True, text=True,
                          env=dict(os.environ, PGCONNECT_TIMEOUT="5")).stdout.strip()


def set_up(state, run):
    base = f"http://127.0.0.1:{state['front']['http']}"
    banker = f"cb_{run}"
    request("POST", f"{base}/v1/users", {"username": banker, "full_name": "Chaos Banker",
                                         "email": f"{banker}@example.com", "password": "password123"})
    subprocess.run([cluster.BINARY, "user", "set-role", banker, "banker"], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, DB_SOURCE=db_url(state) + "?sslmode=disable", NO_COLOR="1"))
    banker_token = request("POST", f"{base}/v1/users/login",
                           {"username": banker, "password": "password123"})[1]["access_token"]
    customers = []
    for i in range(CUSTOMERS):
        name = f"cc_{run}_{i}"
        request("POST", f"{base}/v1/users", {"username": name, "full_name": "Chaos Customer",
                                             "email": f"{name}@example.com", "password": "password123"})
        token = request("POST", f"{base}/v1/users/login", {"username": name, "password": "password123"})[1]["access_token"]
        status, account = request("POST", f"{base}/v1/accounts", {"currency": "USD"}, token)
        assert status == 201, (status, account)
        status, deposit = request("POST", f"{base}/v1/accounts/{account['account']['id']}/deposits",
                                  {"amount": FUNDS, "currency": "USD"}, banker_token)
        assert status == 201, (status, deposit)
        customers.append({"name": name, "token": token, "account": account["account"]["id"]})
    return base, banker_token, customers


# --- the faults ---------------------------------------------------------------------------------

def reap(pid, wait=False):
    """The exit status of a child that has ended (None if it runs, or is not ours)."""
    try:
        done, status = os.waitpid(pid, 0 if wait else os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def whole(state):
    """Leader elected, a synchronous standby streaming, every replica ready and in rotation."""
    return cluster.healthy(state) and all(cluster.in_rotation(state, r) for r in range(len(state["replicas"])))


def wait_for(what, predicate, timeout):
    return ledger_checks.wait_for(what, predicate, timeout, fail)


def leader_kill(state):
    old = cluster.leader(state)
    postmaster = cluster.postmaster_pid(old)
    for pid in (old["pid"], postmaster):
        os.kill(pid, signal.SIGKILL)
    yield f"SIGKILL {old['name']}'s Patroni and postmaster"
    wait_for("a new leader", lambda: (cluster.leader(state) or old)["name"] != old["name"], 60)
    new = cluster.leader(state)
    yield f"{new['name'] if new else 'nobody'} promoted"
    reap(old["pid"])
    cluster.start_node(state, state["nodes"].index(old))
    cluster.save(state)


def switchover(state):
    old = cluster.leader(state)
    candidate = next(m["name"] for m in cluster.members(state) if m.get("role") == "sync_standby")
    body = json.dumps({"leader": old["name"], "candidate": candidate}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{old['rest']}/switchover", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as response:
        answer = response.read().decode().strip()
    yield f"switchover {old['name']} -> {candidate}: {answer}"
    wait_for("the candidate leading", lambda: (cluster.leader(state) or old)["name"] == candidate, 60)


def replica_kill(state, r=0):
    replica = state["replicas"][r]
    os.kill(replica["pid"], signal.SIGKILL)
    yield f"SIGKILL replica {r}"
    reap(replica["pid"])
    wait_for(f"replica {r} out of rotation", lambda: not cluster.in_rotation(state, r), 15)
    yield f"replica {r} out of rotation"
    cluster.start_replica(state, r)
    cluster.save(state)


def replica_stop(state, r=1):
    replica = state["replicas"][r]
    os.kill(replica["pid"], signal.SIGSTOP)
    yield f"SIGSTOP replica {r}"
    wait_for(f"replica {r} out of rotation", lambda: not cluster.in_rotation(state, r), 15)
    stopped = time.monotonic()
    while time.monotonic() - stopped < 10 - 3:  # 10 s stopped in all (it took ~3 s to notice)
        time.sleep(0.2)
    os.kill(replica["pid"], signal.SIGCONT)
    yield f"SIGCONT replica {r}"


def replica_cut(state, r=2):
    cluster.haproxy_command("db", f"disable frontend db_r{r}")
    for node in state["nodes"]:
        cluster.haproxy_command("db", f"shutdown sessions server db_r{r}/{node['name']}")
    yield f"replica {r} cut off from the database"
    if wait_for(f"replica {r} reporting not ready", lambda: not cluster.replica_ready(state, r), 20) is None:
        fail(f"replica {r} kept answering /readyz 200 while cut off")
    wait_for(f"replica {r} out of rotation", lambda: not cluster.in_rotation(state, r), 15)
    cut = time.monotonic()
    while time.monotonic() - cut < 5:
        time.sleep(0.2)
    cluster.haproxy_command("db", f"enable frontend db_r{r}")
    yield f"replica {r} reconnected"


def rolling(state):
    yield "rolling restart begins"
    for r, replica in enumerate(state["replicas"]):
        os.kill(replica["pid"], signal.SIGTERM)
        # Every replica is this script's child (cluster.start ran here): wait for its exit code.
        code = reap(replica["pid"], wait=True)
        if code != 0:
            fail(f"replica {r} exited {code} on SIGTERM")
        cluster.start_replica(state, r)
        cluster.save(state)
        wait_for(f"replica {r} back in rotation",
                 lambda r=r: cluster.replica_ready(state, r) and cluster.in_rotation(state, r), 60)
        yield f"replica {r} restarted (exit {code})"


FAULTS = [("leader-kill", leader_kill), ("switchover", switchover), ("replica-kill", replica_kill),
          ("replica-stop", replica_stop), ("replica-cut", replica_cut), ("rolling", rolling)]


def run_fault(name, fault, state, answers):
    t0 = time.monotonic()
    steps = []
    for step in fault(state):
        steps.append(f"+{time.monotonic() - t0:.1f} s {step}")
    if wait_for(f"{name}: the stack whole again", lambda: whole(state), 90) is not None:
        back = time.monotonic()
        wait_for(f"{name}: 20 successes after recovery", lambda: answers.successes_since(back) >= 20, 30)
    t1 = time.monotonic()
    got = answers.since(t0, t1)
    errors = collections.Counter(a[3] for a in got if a[3] != "ok" and not a[3].startswith("refused"))
    failed = [a for a in got if a[3] != "ok" and not a[3].startswith("refused")]
    if failed:
        last_failure = max(a[0] for a in failed)
        recovered = [a[1] for a in got if a[3] == "ok" and a[0] >= last_failure]
        window = (min(recovered) - t0) if recovered else t1 - t0
    else:
        window = 0.0
    slowest = max((a[1] - a[0] for a in got), default=0)
    row = {"fault": name, "t0": t0, "t1": t1, "answers": len(got), "acknowledged": sum(1 for a in got if a[3] == "ok"),
           "errors": dict(errors), "window_s": round(window, 1), "slowest_s": round(slowest, 1),
           "took_s": round(t1 - t0, 1)}
    print(f"chaos: {name}: " + "; ".join(steps), flush=True)
    print(f"chaos: {name}: {json.dumps({k: v for k, v in row.items() if k not in ('t0', 't1')})}", flush=True)
    return row


# --- the checks ---------------------------------------------------------------------------------

def check(state, load, run, signups, receiver, first_event):
    refs = {**load.acked}
    # Every acknowledged transfer is there, once, and nothing made two transfers.
    counts = dict(line.split("|") for line in psql(
        state, f"SELECT reference, count(*) FROM transfers t JOIN accounts a ON a.id = t.from_account_id "
               f"WHERE a.owner LIKE 'cc\\_{run}\\_%' AND reference IS NOT NULL GROUP BY reference").splitlines())
    ids = dict(line.split("|") for line in psql(
        state, f"SELECT reference, t.id FROM transfers t JOIN accounts a ON a.id = t.from_account_id "
               f"WHERE a.owner LIKE 'cc\\_{run}\\_%' AND reference IS NOT NULL").splitlines())
    lost = [r for r, t in refs.items() if counts.get(r) is None]
    wrong = [r for r, t in refs.items() if r in ids and int(ids[r]) != t and counts.get(r) == "1"]
    duplicated = [r for r, n in counts.items() if int(n) > 1]
    if lost:
        fail(f"{len(lost)} acknowledged transfers are missing from the leader, e.g. {lost[:3]}")
    if wrong:
        fail(f"{len(wrong)} acknowledged transfers have another id in the database, e.g. {wrong[:3]}")
    if duplicated:
        fail(f"{len(duplicated)} requests made more than one transfer, e.g. {duplicated[:3]}")
    for key, seen in load.seen.items():
        if len(seen) > 1:
            fail(f"key {key} was answered with transfers {sorted(seen)}")
    records = dict(line.split("|") for line in psql(
        state, f"SELECT key, coalesce(transfer_id::text, refusal) FROM idempotency_keys "
               f"WHERE username LIKE 'cc\\_{run}\\_%'").splitlines())
    for key, outcome in load.keyed.items():
        expected = str(outcome) if isinstance(outcome, int) else outcome.split(": ")[1]
        if records.get(key) != expected:
            fail(f"key {key}: its client saw {outcome}, its record says {records.get(key)}")
    for name in ledger_checks.broken_invariants(lambda sql: psql(state, sql)):
        fail(f"invariant broken: {name}")
    total = int(psql(state, f"SELECT sum(balance) FROM accounts WHERE owner LIKE 'cc\\_{run}\\_%'"))
    if total != CUSTOMERS * FUNDS:
        fail(f"the customers' money changed: {total}")
    # The outboxes, across replicas.
    mail_dir = cluster.LOGS / "mail"

    def mails():
        names = [p.name for p in mail_dir.glob("*.eml")] if mail_dir.exists() else []
        return collections.Counter(n.split("-", 2)[2][: -len(".eml")] for n in names)

    wait_for("every sign-up's email written", lambda: all(mails()[a] for a in signups.created), 60)
    sent = mails()
    twice = [a for a in signups.created if sent[a] > 1]
    if twice:
        fail(f"{len(twice)} sign-ups got their email more than once, e.g. {twice[:3]}")
    events = psql(state, f"SELECT id FROM events WHERE type = 'transfer.created' AND id > {first_event}").split()
    wait_for("every transfer.created event delivered to the webhook",
             lambda: all(receiver.deliveries[e] for e in events), 120)
    undelivered = [e for e in events if not receiver.deliveries[e]]
    if undelivered:
        fail(f"{len(undelivered)} events never reached the webhook, e.g. {undelivered[:3]}")
    redelivered = sum(1 for e in events if receiver.deliveries[e] > 1)
    # A repeat is either a second attempt at one delivery (its outcome went unrecorded: at least
    # once, by design) or a second delivery row for one event (fan-out ran twice: a bug).
    fanned_twice = int(psql(state, f"SELECT count(*) FROM (SELECT event_id FROM webhook_deliveries "
                                   f"WHERE event_id > {first_event} GROUP BY endpoint_id, event_id "
                                   f"HAVING count(*) > 1) s"))
    attempted_again = int(psql(state, f"SELECT count(*) FROM webhook_deliveries "
                                      f"WHERE event_id > {first_event} AND attempts > 1"))
    if fanned_twice:
        fail(f"{fanned_twice} events were fanned out to the endpoint more than once")
    keyed_moved = sum(1 for t in load.keyed.values() if isinstance(t, int))
    summary = {"acknowledged": len(refs), "lost": len(lost), "duplicated": len(duplicated),
               "keys": len(load.keyed), "keyed_transfers": keyed_moved, "unkeyed_in_doubt": load.in_doubt,
               "signups": len(signups.created), "emails_twice": len(twice), "events": len(events),
               "events_redelivered": redelivered, "events_undelivered": len(undelivered),
               "events_fanned_out_twice": fanned_twice, "deliveries_attempted_again": attempted_again}
    print(f"chaos: checked: {json.dumps(summary)}", flush=True)
    return summary


def table(rows, summary, receiver):
    print("\n| fault | answers | acknowledged | errors seen, by code | window to first success again "
          "| slowest answer | webhook deliveries repeated (by the first one's time) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        errors = ", ".join(f"{code} ×{n}" for code, n in sorted(row["errors"].items())) or "none"
        again = sum(1 for t in receiver.again if row["t0"] <= t < row["t1"])
        print(f"| {row['fault']} | {row['answers']} | {row['acknowledged']} | {errors} | "
              f"{row['window_s']} s | {row['slowest_s']} s | {again} |")
    inside = sum(1 for t in receiver.again for row in rows if row["t0"] <= t < row["t1"])
    print(f"\nWebhook deliveries repeated outside the faults' spans: {len(receiver.again) - inside}.")
    print(f"In all: {summary['acknowledged']} acknowledged transfers, {summary['lost']} lost, "
          f"{summary['duplicated']} duplicated; {summary['keys']} keys; {summary['unkeyed_in_doubt']} unkeyed "
          f"requests left in doubt (answered unavailable, no key); {summary['signups']} sign-ups, "
          f"{summary['emails_twice']} emailed twice; {summary['events']} transfer events, "
          f"{summary['events_redelivered']} delivered twice, {summary['events_undelivered']} never.", flush=True)


# Faults after which no client may see any error at all: a deploy is planned, and a replica that is
# told to stop leaves the rotation before it stops accepting (doc/reliability.md).
CLEAN = {"rolling"}


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = [name for name, _ in FAULTS]
    parser.add_argument("--faults", default=",".join(names),
                        help=f"comma-separated, from: {', '.join(names)} (default: all, in that order)")
    parser.add_argument("--repeat", type=int, default=1, help="run the list this many times (default 1)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.faults.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in names]
    if unknown or not chosen or args.repeat < 1:
        parser.error(f"unknown faults {unknown}" if unknown else "nothing to run")
    table = dict(FAULTS)
    return [(name, table[name]) for _ in range(args.repeat) for name in chosen]


def main():
    faults = arguments()
    started = time.monotonic()
    run = uuid.uuid4().hex[:6]
    state = cluster.start()
    try:
        base, banker_token, customers = set_up(state, run)
        receiver = Receiver()
        status, hook = request("POST", f"{base}/v1/webhooks", {"url": receiver.url,
                                                              "event_types": ["transfer.created"]}, banker_token)
        if status != 201:
            raise SystemExit(f"chaos: creating the webhook got {status} {hook}")
        first_event = int(psql(state, "SELECT coalesce(max(id), 0) FROM events"))
        rpc = Grpc(f"127.0.0.1:{state['front']['grpc']}")
        answers = Answers()
        load = Load(state, customers, rpc, answers)
        signups = SignUps(base, run)
        load.begin()
        signups.thread.start()
        warm = time.monotonic()
        wait_for("100 transfers before the first fault", lambda: answers.successes_since(warm) >= 100, 60)
        rows = [run_fault(name, fault, state, answers) for name, fault in faults]
        load.end()
        signups.stop.set()
        signups.thread.join()
        for row in rows:
            if row["fault"] in CLEAN and row["errors"]:
                fail(f"{row['fault']}: clients saw errors during a planned restart: {row['errors']}")
        for a in answers.log:
            # 409 conflict / ABORTED: a keyed retry arrived while its first attempt still ran.
            if a[3] != "ok" and not a[3].startswith("refused") and a[3] not in (
                    "503 unavailable", "UNAVAILABLE", "409 conflict", "ABORTED conflict"):
                fail(f"an answer other than unavailable: {a[3]} ({a[2]}: {load.details.get(a[3], '')})")
                break
        limit = cluster.FRONT_TIMEOUT_S + 2
        slow = [a for a in answers.log if a[1] - a[0] > limit]
        if slow:
            fail(f"{len(slow)} answers took longer than {limit} s")
        summary = check(state, load, run, signups, receiver, first_event)
        table(rows, summary, receiver)
    finally:
        cluster.stop()
    print(f"chaos: {len(FAILURES)} failures in {time.monotonic() - started:.0f} s", flush=True)
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
