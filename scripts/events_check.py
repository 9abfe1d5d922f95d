#!/usr/bin/env python3
"""Events with clients nobody here wrote: webhooks verified by PyPI's `standardwebhooks`, streams
read by grpcurl and curl -N, against real servers (`make events-check`).

Scenarios, each on the same fresh database `simplebank_events`:
  retry     the receiver answers 500 to every first attempt: each event is retried and reaches
            the application once, after dedupe by webhook-id;
  kill      the receiver is down, the server is SIGKILLed mid-retry and started again, the
            receiver comes back: nothing is lost;
  replicas  two servers drain one outbox under concurrent transfers: every event delivered,
            never two attempts at the same event at once; the outbox lag is sampled meanwhile;
  tamper    a delivered body changed by one byte, or checked with another secret, is rejected by
            the library;
  streams   grpcurl on WatchAccount, and curl -N on the SSE route resumed with Last-Event-ID
            after each disconnect while transfers commit: every event once, in order.
Prints the figures the issue asks for (events produced, delivered, retried, duplicates seen by
the receiver before dedupe, lag) and exits non-zero on the first broken promise."""

import argparse
import glob
import http.server
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import served

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKEN_KEY = "events-check-key-of-32-bytes...."
WEBHOOK_KEY = "events-check-webhook-key-32-byte"
GRPCURL = ROOT / ".venv" / "bin" / "grpcurl"
FIGURES = {}


def fail(message):
    sys.exit(f"events-check: FAIL {message}")


def check(condition, message):
    if not condition:
        fail(message)


def wait_until(what, condition, timeout=60, every=0.1):
    """Polls `condition` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    fail(f"timed out after {timeout} s waiting for {what}")


def psql(url, sql):
    command = [sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1], url]
    return subprocess.run([*command, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], check=True,
                          capture_output=True, text=True).stdout.strip()


def with_database(url, name):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def call(base, method, path, body=None, token=None, headers=None):
    """(status, parsed body)."""
    request = urllib.request.Request(
        f"{base}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def ok(base, method, path, body=None, token=None, status=200):
    got, answer = call(base, method, path, body, token)
    check(got == status, f"{method} {path}: expected {status}, got {got}: {answer}")
    return answer


class Receiver:
    """A webhook receiver on a fixed loopback port that verifies every delivery with the
    `standardwebhooks` library. `fail_first`: answer 500 to the first attempt at each event.
    `delay`: hold each request that long, so that two concurrent attempts at one event would
    overlap and be seen."""

    def __init__(self, fail_first=False, delay=0.0):
        self.fail_first, self.delay = fail_first, delay
        self.lock = threading.Lock()
        self.secret = None
        self.requests = []          # (webhook-id, status answered, received at)
        self.accepted = {}          # webhook-id -> parsed body, once (the application's dedupe)
        self.duplicates = 0         # 2xx answers to an id already accepted
        self.in_flight = {}         # webhook-id -> requests being handled now
        self.overlaps = 0           # a request for an id that was in flight already
        self.unverified = 0
        self.raw = []               # (headers, body) of verified requests, for `tamper`
        self.latencies = []         # seconds from the event's commit to its acceptance
        self.server = None
        self.port = None

    def start(self, port=0):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                msg_id = headers.get("webhook-id")
                with receiver.lock:
                    overlapping = receiver.in_flight.get(msg_id, 0) > 0
                    receiver.overlaps += overlapping
                    receiver.in_flight[msg_id] = receiver.in_flight.get(msg_id, 0) + 1
                try:
                    if receiver.delay:
                        time.sleep(receiver.delay)
                    try:
                        payload = Webhook(receiver.secret).verify(body, headers)
                    except WebhookVerificationError:
                        with receiver.lock:
                            receiver.unverified += 1
                        self.send_response(400)
                        self.end_headers()
                        return
                    with receiver.lock:
                        first_attempt = not any(r[0] == msg_id for r in receiver.requests)
                        status = 500 if receiver.fail_first and first_attempt else 204
                        receiver.requests.append((msg_id, status, time.time()))
                        if status == 204:
                            if msg_id in receiver.accepted:
                                receiver.duplicates += 1
                            else:
                                receiver.accepted[msg_id] = payload
                                receiver.raw.append((headers, body))
                                committed = payload["timestamp"]
                                receiver.latencies.append(time.time() - parse_time(committed))
                    self.send_response(status)
                    self.end_headers()
                finally:
                    with receiver.lock:
                        receiver.in_flight[msg_id] -= 1

            def log_message(self, *args):
                pass

        # socketserver's default backlog (5) drops the SYNs of a burst of concurrent deliveries,
        # which then wait a second for TCP's retransmission: a receiver's problem, not ours.
        http.server.ThreadingHTTPServer.request_queue_size = 128
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    def ids(self):
        with self.lock:
            return set(self.accepted)


def parse_time(rfc3339):
    from datetime import datetime
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


class Bank:
    """A server, a banker and two customers with money."""

    def __init__(self, url, log_name):
        self.url = url
        self.servers = []
        self.start(log_name)

    def start(self, log_name):
        process, base, grpc = served.serve(
            ROOT / "target" / "debug" / "simplebank", ROOT / "target" / log_name,
            DB_SOURCE=self.url, TOKEN_SYMMETRIC_KEY=TOKEN_KEY, WEBHOOK_SECRET_KEY=WEBHOOK_KEY,
            WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_TIMEOUT="2s", EVENTS_POLL_INTERVAL="50ms",
            LOGIN_ATTEMPTS_PER_IP="0", MAIL_SENDER="log")
        self.servers.append((process, base, grpc, ROOT / "target" / log_name))
        return base, grpc

    @property
    def base(self):
        return self.servers[0][1]

    @property
    def grpc(self):
        return self.servers[0][2]

    def setup(self):
        for name in ("clerk", "alice", "bob"):
            call(self.base, "POST", "/v1/users", {"username": name, "full_name": name.title(),
                                                   "email": f"{name}@example.com",
                                                   "password": f"{name}-password"})
        subprocess.run([ROOT / "target" / "debug" / "simplebank", "user", "set-role", "clerk",
                        "banker"], check=True, capture_output=True,
                       env=dict(os.environ, DB_SOURCE=self.url))
        self.tokens = {name: self.login(name) for name in ("clerk", "alice", "bob")}
        self.accounts = {name: ok(self.base, "POST", "/v1/accounts", {"currency": "USD"},
                                  self.tokens[name], 201)["account"]["id"]
                         for name in ("alice", "bob")}
        for name in ("alice", "bob"):
            self.deposit(self.accounts[name], 1_000_000)

    def login(self, name, base=None):
        return ok(base or self.base, "POST", "/v1/users/login",
                  {"username": name, "password": f"{name}-password"})["access_token"]

    def deposit(self, account, amount, base=None):
        return ok(base or self.base, "POST", f"/v1/accounts/{account}/deposits",
                  {"amount": amount, "currency": "USD"}, self.tokens["clerk"], 201)

    def transfer(self, payer, amount, base=None):
        payee = "bob" if payer == "alice" else "alice"
        return ok(base or self.base, "POST", "/v1/transfers",
                  {"from_account_id": self.accounts[payer], "to_account_id": self.accounts[payee],
                   "amount": amount, "currency": "USD"}, self.tokens[payer], 201)

    def webhook(self, receiver, event_types):
        created = ok(self.base, "POST", "/v1/webhooks",
                     {"url": receiver.url, "event_types": event_types,
                      "description": "events-check"}, self.tokens["clerk"], 201)
        receiver.secret = created["secret"]
        return created["webhook"]["id"]

    def event_ids(self, where):
        return [int(x) for x in psql(self.url, f"SELECT id FROM events WHERE {where} ORDER BY id")
                .split()]

    def stop_all(self):
        for process, *_ in self.servers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, *_ in self.servers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def scenario_retry(bank):
    receiver = Receiver(fail_first=True).start()
    hook = bank.webhook(receiver, ["deposit.created"])
    first = int(psql(bank.url, "SELECT COALESCE(max(id), 0) FROM events"))
    for n in range(10):
        bank.deposit(bank.accounts["alice"], 100 + n)
    wanted = {str(i) for i in bank.event_ids(f"type = 'deposit.created' AND id > {first}")}
    check(len(wanted) == 10, f"10 deposit events, got {len(wanted)}")
    wait_until("10 deliveries after a 500 each", lambda: receiver.ids() >= wanted, timeout=60)
    attempts = {}
    for msg_id, status, _ in receiver.requests:
        attempts.setdefault(msg_id, []).append(status)
    check(all(attempts[i][:2] == [500, 204] for i in wanted),
          f"each event answered 500 then 204: {attempts}")
    log = ok(bank.base, "GET", f"/v1/webhooks/{hook}/deliveries", token=bank.tokens["clerk"])
    statuses = sorted((d["attempt"], d.get("status_code"), d["delivery_status"])
                      for d in log["deliveries"])
    check(statuses.count((1, 500, "delivered")) == 10 and statuses.count((2, 204, "delivered")) == 10,
          f"the delivery log shows both attempts of each: {statuses}")
    check(receiver.unverified == 0, "every delivery verified")
    FIGURES["retry"] = dict(produced=10, requests=len(receiver.requests), retried=10,
                            delivered=len(wanted), duplicates_before_dedupe=receiver.duplicates)
    print(f"events-check: retry: 10 events, {len(receiver.requests)} requests (10 answered 500), "
          f"10 delivered once, {receiver.duplicates} duplicates before dedupe", flush=True)
    ok(bank.base, "DELETE", f"/v1/webhooks/{hook}", token=bank.tokens["clerk"], status=204)
    receiver.stop()
    return receiver


def scenario_kill(bank):
    receiver = Receiver().start()
    port = receiver.port
    hook = bank.webhook(receiver, ["transfer.created"])
    receiver.stop()  # down: connections are refused
    first = int(psql(bank.url, "SELECT COALESCE(max(id), 0) FROM events"))
    for n in range(10):
        bank.transfer("alice", 1 + n)
    wanted = {str(i) for i in bank.event_ids(f"type = 'transfer.created' AND id > {first}")}
    check(len(wanted) == 10, f"10 transfer events, got {len(wanted)}")
    wait_until("a refused attempt at every one of them in the delivery log", lambda: len({
        d["event_id"] for d in ok(bank.base, "GET", f"/v1/webhooks/{hook}/deliveries",
                                  token=bank.tokens["clerk"])["deliveries"]
        if d.get("error")}) == 10, timeout=60)
    process = bank.servers[0][0]
    process.kill()
    process.wait()
    bank.servers.pop(0)
    bank.start("events-check-server-restarted.log")
    bank.servers.insert(0, bank.servers.pop())
    receiver = Receiver().start(port)
    receiver.secret = ok(bank.base, "POST", f"/v1/webhooks/{hook}/rotate_secret",
                         token=bank.tokens["clerk"])["secret"]
    wait_until("all 10 delivered after the restart", lambda: receiver.ids() >= wanted, timeout=90)
    check(receiver.unverified == 0, "every delivery verified (with the rotated secret)")
    FIGURES["kill"] = dict(produced=10, delivered=len(receiver.ids() & wanted), lost=0,
                           duplicates_before_dedupe=receiver.duplicates)
    print(f"events-check: kill: receiver down, server SIGKILLed and restarted: 10 events, "
          f"{len(receiver.ids() & wanted)} delivered, 0 lost, {receiver.duplicates} duplicates "
          "before dedupe", flush=True)
    ok(bank.base, "DELETE", f"/v1/webhooks/{hook}", token=bank.tokens["clerk"], status=204)
    receiver.stop()


def metric(base, name):
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1) or ""] = float(match.group(2))
    return values


def scenario_replicas(bank):
    second_base, _ = bank.start("events-check-server-b.log")
    receiver = Receiver(delay=0.05).start()
    hook = bank.webhook(receiver, [])
    bases = [bank.base, second_base]
    first = int(psql(bank.url, "SELECT COALESCE(max(id), 0) FROM events"))
    lags, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            lags.append(max(metric(bank.base, "webhook_outbox_lag_seconds").values(), default=0))
            time.sleep(0.1)

    def client(n):
        token_base = bases[n % 2]
        payer = "alice" if n % 2 == 0 else "bob"
        for i in range(25):
            bank.transfer(payer, 1 + i, base=token_base)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    load_seconds = time.monotonic() - started
    wanted = {str(i) for i in bank.event_ids(f"id > {first}")}
    check(len(wanted) == 200, f"200 transfer events, got {len(wanted)}")
    wait_until("200 deliveries from two replicas", lambda: receiver.ids() >= wanted, timeout=120)
    stop.set()
    sampler.join()
    per_server = []
    for _, _, _, log in bank.servers[-2:]:
        lines = [json.loads(l) for l in log.read_text().splitlines() if "webhook attempt" in l]
        per_server.append(sum(1 for l in lines if int(l.get("fields", l).get("event_id", 0)) > first))
    check(receiver.overlaps == 0, f"never two attempts at one event at once: {receiver.overlaps}")
    check(receiver.unverified == 0, "every delivery verified")
    check(all(n > 0 for n in per_server), f"both replicas delivered: {per_server}")
    latencies = sorted(receiver.latencies[-200:])
    FIGURES["replicas"] = dict(produced=200, delivered=len(receiver.ids() & wanted),
                               attempts_per_replica=per_server, concurrent_duplicates=receiver.overlaps,
                               duplicates_before_dedupe=receiver.duplicates,
                               max_lag_s=round(max(lags, default=0), 3),
                               commit_to_receipt_p50_ms=round(latencies[len(latencies) // 2] * 1000),
                               commit_to_receipt_max_ms=round(latencies[-1] * 1000),
                               transfers_per_s=round(200 / load_seconds))
    print(f"events-check: replicas: 200 transfers at {200 / load_seconds:.0f}/s through two servers, "
          f"200 delivered (attempts per replica {per_server}), {receiver.overlaps} concurrent, "
          f"{receiver.duplicates} duplicates before dedupe; outbox lag max "
          f"{max(lags, default=0):.2f} s, commit to receipt p50 "
          f"{latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms",
          flush=True)
    ok(bank.base, "DELETE", f"/v1/webhooks/{hook}", token=bank.tokens["clerk"], status=204)
    receiver.stop()
    return receiver


def scenario_tamper(receiver):
    headers, body = receiver.raw[0]
    Webhook(receiver.secret).verify(body, headers)  # the original verifies
    tampered = body.replace('"amount":', '"amount":1', 1) if '"amount":' in body else body + " "
    check(tampered != body, "the body was changed")
    for what, secret, text in (("a tampered body", receiver.secret, tampered),
                               ("another endpoint's secret",
                                "whsec_" + "A" * 43 + "=", body)):
        try:
            Webhook(secret).verify(text, headers)
            fail(f"{what} was accepted")
        except WebhookVerificationError as error:
            print(f"events-check: tamper: {what} rejected by standardwebhooks ({error})")


def sse_round(bank, account, last_id, seconds):
    """One curl -N session: the SSE messages it got in `seconds`, as (id, type)."""
    headers = ["-H", f"Authorization: Bearer {bank.tokens['alice']}"]
    url = f"{bank.base}/v1/accounts/{account}/events"
    if last_id is None:
        url += "?after=0"
    else:
        headers += ["-H", f"Last-Event-ID: {last_id}"]
    run = subprocess.run(["curl", "-sN", "--max-time", str(seconds), *headers, url],
                         capture_output=True, text=True)
    check(run.returncode in (0, 28), f"curl -N: {run.returncode} {run.stderr}")
    got = []
    for block in run.stdout.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in fields:
            data = json.loads(fields["data"])
            check(str(data["id"]) == fields["id"] and data["type"] == fields["event"],
                  f"an SSE message names its id and type: {block}")
            got.append((int(fields["id"]), fields["event"]))
    return got


def scenario_streams(bank):
    account = bank.accounts["alice"]
    stop = threading.Event()

    def load():
        n = 0
        while not stop.is_set():
            bank.transfer("alice" if n % 2 else "bob", 1 + n % 7)
            n += 1

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    seen, last, rounds = [], None, 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        got = sse_round(bank, account, last, 1)
        seen += got
        rounds += 1
        if got:
            last = got[-1][0]
    stop.set()
    loader.join()
    # Drain: after the load, rounds until one brings nothing new.
    while True:
        got = sse_round(bank, account, last, 1)
        rounds += 1
        if not got:
            break
        seen += got
        last = got[-1][0]
    ids = [i for i, _ in seen]
    expected = bank.event_ids(f"account_id = {account} OR counter_account_id = {account}")
    check(ids == expected, f"curl -N over {rounds} sessions: every event once, in order "
                           f"({len(ids)} seen, {len(expected)} in the table)")
    print(f"events-check: streams: curl -N, {rounds} sessions resumed with Last-Event-ID while "
          f"transfers committed: {len(ids)} events, no gap, no duplicate", flush=True)

    run = subprocess.run([GRPCURL, "-plaintext", "-max-time", "3",
                          "-H", f"authorization: Bearer {bank.tokens['alice']}",
                          "-d", json.dumps({"account_id": account, "after_event_id": 0}),
                          bank.grpc, "simplebank.v1.SimpleBank/WatchAccount"],
                         capture_output=True, text=True)
    decoder, text, pos, events = json.JSONDecoder(), run.stdout, 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        value, pos = decoder.raw_decode(text, pos)
        events.append(value)
    grpc_ids = [int(e["id"]) for e in events]
    check(grpc_ids == expected, f"grpcurl WatchAccount: every event in order ({len(grpc_ids)} "
                                f"of {len(expected)}; {run.stderr.strip()[:200]})")
    check(all(json.loads(e["data"])["id"] for e in events), "each event carries its resource")
    print(f"events-check: streams: grpcurl WatchAccount from event 0: {len(grpc_ids)} events, "
          "in order", flush=True)
    FIGURES["streams"] = dict(sse_sessions=rounds, sse_events=len(ids), grpcurl_events=len(grpc_ids))


def main():
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    base_url = served.require_db_source("events-check")
    admin = with_database(base_url, "postgres")
    psql(admin, "DROP DATABASE IF EXISTS simplebank_events WITH (FORCE)")
    psql(admin, "CREATE DATABASE simplebank_events")
    url = with_database(base_url, "simplebank_events")
    check(GRPCURL.exists(), f"{GRPCURL} is installed (make grpc-clients)")
    bank = Bank(url, "events-check-server.log")
    try:
        bank.setup()
        scenario_retry(bank)
        scenario_kill(bank)
        replicas = scenario_replicas(bank)
        scenario_tamper(replicas)
        scenario_streams(bank)
        produced = int(psql(url, "SELECT count(*) FROM events"))
        print(f"events-check: passed; {produced} events produced in all; "
              f"figures: {json.dumps(FIGURES)}")
    finally:
        bank.stop_all()
        psql(admin, "DROP DATABASE IF EXISTS simplebank_events WITH (FORCE)")


if __name__ == "__main__":
    main()
