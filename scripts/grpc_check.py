#!/usr/bin/env python3
"""Drives the gRPC API the way evans does: with no .proto file, only server reflection.

Starts `simplebank serve` on free ports against DB_SOURCE, discovers simplebank.v1.SimpleBank over
the reflection protocol (v1alpha, the one evans speaks), builds every request from the discovered
descriptors, and calls every RPC the service lists — failing if one was left uncalled, so a new
RPC cannot be added without this check noticing. Then it stops the server with SIGTERM and checks
the server wrote one request-log line per RPC.

Usernames get a random suffix, so the check can run against a database that already has data.
Run it through `make grpc-check` (which installs the Python packages into .venv/).
"""

import argparse
import os
import pathlib
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import served  # noqa: E402  (scripts/served.py: start the server, read its ready file)

SERVICE = "simplebank.v1.SimpleBank"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Server:
    """`simplebank serve` on port 0, its bound addresses read from its ready file; its log
    (stderr) is read line by line, to check the request log at the end."""

    def __init__(self, binary, db_source):
        log_path = pathlib.Path(binary).resolve().parent / "grpc-check-server.log"
        self.process, _, self.grpc_address = served.serve(
            binary, log_path, log_format="pretty", stderr_pipe=True, DB_SOURCE=db_source,
            RUST_LOG="info")
        self.lines = []
        self._pending = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            line = ANSI.sub("", line.rstrip("\n"))
            self.lines.append(line)
            self._pending.put(line)
        self._pending.put(None)

    def stop(self):
        """SIGTERM, as Kubernetes sends it; the server must finish and exit 0."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


class Bank:
    """Every RPC of the service, built from reflection alone."""

    def __init__(self, channel):
        self.channel = channel
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        check(SERVICE in services, f"reflection lists {SERVICE}: {services}")
        check(
            "grpc.health.v1.Health" in services,
            f"reflection lists the health service: {services}",
        )
        self.pool = descriptor_pool.DescriptorPool(database)
        self.service = self.pool.FindServiceByName(SERVICE)
        self.methods = {m.name: m for m in self.service.methods}
        self.called = set()
        self.last_metadata = {}
        self.calls = 0

    def message(self, full_name):
        """A message class for `full_name`, resolved through reflection."""
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))

    def error_code(self, trailers):
        """The SPEC §4 code in the ErrorInfo of a failed call's `grpc-status-details-bin`."""
        status = self.message("google.rpc.Status").FromString(trailers["grpc-status-details-bin"])
        for detail in status.details:
            name = detail.type_url.rsplit("/", 1)[-1]
            if name == "google.rpc.ErrorInfo":
                return self.message(name).FromString(detail.value).metadata["code"]
        return None

    def stream(self, name, request, token, count, until=None):
        """The first `count` messages of the server-streaming RPC `name` (or those up to the
        first whose `type` is `until`), as dicts; the call is cancelled then (the stream itself
        never ends on its own)."""
        method = self.methods[name]
        request_type = message_factory.GetMessageClass(method.input_type)
        reply_type = message_factory.GetMessageClass(method.output_type)
        stub = self.channel.unary_stream(
            f"/{SERVICE}/{name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=reply_type.FromString,
        )
        metadata = [("x-request-id", f"grpc-check-{self.calls}"),
                    ("authorization", f"Bearer {token}")]
        self.called.add(name)
        self.calls += 1
        replies = stub(json_format.ParseDict(request, request_type()), metadata=metadata,
                       timeout=30)
        got = []
        for reply in replies:
            got.append(json_format.MessageToDict(reply, preserving_proto_field_name=True))
            if len(got) == count or (until is not None and got[-1].get("type") == until):
                break
        replies.cancel()
        print(f"  {name:<17} OK ({len(got)} messages)")
        return got

    def call(self, name, request, token=None, expect=grpc.StatusCode.OK, error=None, extra=()):
        """Calls `name` with `request` (a dict, as typed into evans); returns the reply as a dict.

        A failure must have the status `expect` and, in its ErrorInfo, the table code `error`
        (by default the status name in lower case, which is the table's code for most rows)."""
        method = self.methods[name]
        request_type = message_factory.GetMessageClass(method.input_type)
        reply_type = message_factory.GetMessageClass(method.output_type)
        stub = self.channel.unary_unary(
            f"/{SERVICE}/{name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=reply_type.FromString,
        )
        metadata = [("x-request-id", f"grpc-check-{self.calls}")]
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        metadata.extend(extra)
        message = json_format.ParseDict(request, request_type())
        self.called.add(name)
        self.calls += 1
        try:
            reply, call = stub.with_call(message, metadata=metadata, timeout=30)
            code, echoed = grpc.StatusCode.OK, dict(call.initial_metadata())
            self.last_metadata = echoed
        except grpc.RpcError as failure:
            reply, code = None, failure.code()
            trailers = dict(failure.trailing_metadata() or [])
            echoed = dict(failure.initial_metadata() or []) | trailers
            detail = failure.details()
            table_code = self.error_code(trailers)
        check(
            code == expect,
            f"{name}: expected {expect.name}, got {code.name}"
            + ("" if code == grpc.StatusCode.OK else f" ({detail})"),
        )
        check(
            echoed.get("x-request-id") == metadata[0][1],
            f"{name}: x-request-id echoed, got {echoed.get('x-request-id')}",
        )
        if reply is None:
            wanted = error or expect.name.lower()
            check(table_code == wanted, f"{name}: ErrorInfo code {wanted}, got {table_code}")
            print(f"  {name:<17} {code.name} ({table_code})")
            return None
        print(f"  {name:<17} {code.name}")
        return json_format.MessageToDict(reply, preserving_proto_field_name=True)


def check(condition, what):
    if not condition:
        raise SystemExit(f"grpc-check FAILED: {what}")


def emailed_link(server, address, timeout=15):
    """The (email_id, secret_code) the development log sender logged for `address`."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"email_id=(\d+)&secret_code=([0-9a-f]{64})")
    while time.monotonic() < deadline:
        for line in reversed(server.lines):
            if f"to={address}" in line:
                match = pattern.search(line)
                if match:
                    return int(match.group(1)), match.group(2)
        time.sleep(0.2)
    raise SystemExit(f"grpc-check FAILED: no verification email logged for {address}")


def scenario(bank, server, binary, db_source):
    tag = secrets.token_hex(3)
    alice, bob, clerk = (f"{name}_{tag}" for name in ("alice", "bob", "clerk"))
    password = "password123"

    for user in (alice, bob, clerk):
        reply = bank.call(
            "CreateUser",
            {
                "username": user,
                "full_name": f"{user} Example",
                "email": f"{user}@example.com",
                "password": password,
            },
        )
        check(reply["user"]["username"] == user, "CreateUser returns the user")
    bank.call(
        "CreateUser",
        {"username": alice, "full_name": "x", "email": "x@example.com", "password": password},
        expect=grpc.StatusCode.ALREADY_EXISTS,
    )
    # The verification email (logged in development) carries the code VerifyEmail takes.
    email_id, code = emailed_link(server, f"{alice}@example.com")
    bank.call("VerifyEmail", {"email_id": email_id, "secret_code": "0" * 64},
              expect=grpc.StatusCode.INVALID_ARGUMENT)
    check(bank.call("VerifyEmail", {"email_id": email_id, "secret_code": code})["is_verified"],
          "VerifyEmail verifies with the emailed code")
    bank.call("VerifyEmail", {"email_id": email_id, "secret_code": code},
              expect=grpc.StatusCode.INVALID_ARGUMENT)

    # The first banker is made from the command line, as an operator would.
    subprocess.run(
        [binary, "user", "set-role", clerk, "banker"],
        env=dict(os.environ, DB_SOURCE=db_source, NO_COLOR="1"),
        check=True,
        stdout=subprocess.DEVNULL,
    )

    def login(user):
        return bank.call("LoginUser", {"username": user, "password": password})

    session = login(alice)
    a_token = session["access_token"]
    b_token = login(bob)["access_token"]
    clerk_login = login(clerk)
    check(clerk_login["user"]["role"] == "banker", "the clerk logs in as a banker")
    c_token = clerk_login["access_token"]
    bank.call("LoginUser", {"username": bob, "password": "wrong-password"},
              expect=grpc.StatusCode.UNAUTHENTICATED)

    renewed = bank.call("RenewAccessToken", {"refresh_token": session["refresh_token"]})
    a_token = renewed["access_token"]
    profile = bank.call("GetUser", {"username": alice}, a_token)["user"]
    check(profile["email"] == f"{alice}@example.com" and profile.get("is_email_verified"),
          f"GetUser returns the verified profile: {profile}")
    bank.call("GetUser", {"username": alice}, b_token, expect=grpc.StatusCode.PERMISSION_DENIED)
    updated = bank.call("UpdateUser", {"username": alice, "full_name": "Alice Liddell"}, a_token)
    check(updated["user"]["full_name"] == "Alice Liddell", "UpdateUser changes the name")
    bank.call("SetUserRole", {"username": bob, "role": "depositor"}, c_token)
    bank.call("SetUserRole", {"username": bob, "role": "banker"}, a_token,
              expect=grpc.StatusCode.PERMISSION_DENIED)

    a_account = bank.call("CreateAccount", {"currency": "USD"}, a_token)["account"]
    b_account = bank.call("CreateAccount", {"currency": "USD"}, b_token)["account"]
    # int64 fields travel as JSON strings in the proto3 JSON mapping.
    a_id, b_id = int(a_account["id"]), int(b_account["id"])
    bank.call("CreateAccount", {"currency": "XYZ"}, a_token,
              expect=grpc.StatusCode.INVALID_ARGUMENT)
    bank.call("CreateAccount", {"currency": "USD"}, a_token,
              expect=grpc.StatusCode.ALREADY_EXISTS)
    got = bank.call("GetAccount", {"id": a_id}, a_token)["account"]
    check(got["owner"] == alice and got["currency"] == "USD", "GetAccount")
    listed = bank.call("ListAccounts", {"page_size": 10}, a_token)["accounts"]
    check([int(a["id"]) for a in listed] == [a_id], f"ListAccounts shows alice's only: {listed}")

    deposited = bank.call("Deposit", {"account_id": a_id, "amount": 1000, "currency": "USD"},
                          c_token)
    check(int(deposited["account"]["balance"]) == 1000, "Deposit credits the account")
    bank.call("Deposit", {"account_id": a_id, "amount": 1000, "currency": "USD"}, a_token,
              expect=grpc.StatusCode.PERMISSION_DENIED)
    bank.call("Withdraw", {"account_id": a_id, "amount": 100, "currency": "USD"}, c_token)

    sent = bank.call(
        "CreateTransfer",
        {"from_account_id": a_id, "to_account_id": b_id, "amount": 250, "currency": "USD"},
        a_token,
    )
    check(int(sent["from_account"]["balance"]) == 650, f"sender balance after transfer: {sent}")
    check("balance_after" not in sent["to_entry"] and "to_account" not in sent,
          f"the recipient's balance is not shown to the sender: {sent}")
    bank.call(
        "CreateTransfer",
        {"from_account_id": a_id, "to_account_id": b_id, "amount": 10_000, "currency": "USD"},
        a_token,
        expect=grpc.StatusCode.FAILED_PRECONDITION,
        error="insufficient_funds",
    )
    bank.call(
        "CreateTransfer",
        {"from_account_id": b_id, "to_account_id": a_id, "amount": 1, "currency": "USD"},
        a_token,
        # Someone else's account is not found, as one that does not exist (SPEC §10).
        expect=grpc.StatusCode.NOT_FOUND, error="not_found",
    )
    # A retried transfer under the same idempotency key is answered from the first one.
    keyed = {"from_account_id": a_id, "to_account_id": b_id, "amount": 5, "currency": "USD"}
    key = [("idempotency-key", f"check-{tag}")]
    first = bank.call("CreateTransfer", keyed, a_token, extra=key)
    check("idempotent-replayed" not in bank.last_metadata, "a first answer is not a replay")
    again = bank.call("CreateTransfer", keyed, a_token, extra=key)
    check(bank.last_metadata.get("idempotent-replayed") == "true" and again == first,
          "the retry replays the first answer")
    transfer = bank.call("GetTransfer", {"id": int(sent["transfer"]["id"])}, b_token)["transfer"]
    check(int(transfer["amount"]) == 250, "GetTransfer as the recipient")
    entries = bank.call("ListEntries", {"account_id": a_id, "page_size": 10}, a_token)["entries"]
    check([int(e["amount"]) for e in entries] == [-5, -250, -100, 1000],
          f"ListEntries newest first, the keyed transfer once: {entries}")
    check(int(entries[0]["balance_after"]) == 645, "balance_after on the newest entry")

    # Account controls: an overdraft lets alice go below zero; frozen, her debits stop.
    limited = bank.call("SetOverdraftLimit", {"account_id": a_id, "limit": 1000}, c_token)
    check(int(limited["account"]["overdraft_limit"]) == 1000, f"SetOverdraftLimit: {limited}")
    bank.call("SetOverdraftLimit", {"account_id": a_id, "limit": 1000}, a_token,
              expect=grpc.StatusCode.PERMISSION_DENIED)
    overdrawn = bank.call(
        "CreateTransfer",
        {"from_account_id": a_id, "to_account_id": b_id, "amount": 1000, "currency": "USD"},
        a_token,
    )
    check(int(overdrawn["from_account"]["balance"]) == -355, f"into the overdraft: {overdrawn}")
    frozen = bank.call("SetAccountStatus",
                       {"account_id": a_id, "status": "frozen", "reason": "grpc-check"}, c_token)
    check(frozen["account"]["status"] == "frozen", f"SetAccountStatus: {frozen}")
    bank.call(
        "CreateTransfer",
        {"from_account_id": a_id, "to_account_id": b_id, "amount": 1, "currency": "USD"},
        a_token,
        expect=grpc.StatusCode.FAILED_PRECONDITION,
        error="account_frozen",
    )
    bank.call("SetAccountStatus", {"account_id": a_id, "status": "active"}, c_token)

    # Holds: alice authorises 300 for bob, bob captures 100 of it; the rest goes back.
    hold_request = {"from_account_id": a_id, "to_account_id": b_id, "amount": 300,
                    "currency": "USD", "reference": f"grpc-{tag}"}
    placed = bank.call("CreateHold", hold_request, a_token)
    hold_id = int(placed["hold"]["id"])
    check(placed["hold"]["status"] == "pending"
          and int(placed["from_account"]["available_balance"]) == -655,
          f"CreateHold reserves the amount: {placed}")
    bank.call("CaptureHold", {"hold_id": hold_id}, a_token,
              expect=grpc.StatusCode.PERMISSION_DENIED)
    captured = bank.call("CaptureHold", {"hold_id": hold_id, "amount": 100}, b_token)
    check(int(captured["transfer"]["hold_id"]) == hold_id
          and int(captured["hold"]["captured_amount"]) == 100,
          f"CaptureHold in part makes one transfer: {captured}")
    bank.call("VoidHold", {"hold_id": hold_id}, b_token,
              expect=grpc.StatusCode.FAILED_PRECONDITION, error="hold_not_pending")
    second = bank.call("CreateHold", {**hold_request, "amount": 50}, a_token)
    voided = bank.call("VoidHold", {"hold_id": int(second["hold"]["id"])}, b_token)
    check(voided["hold"]["status"] == "voided", f"VoidHold: {voided}")
    got = bank.call("GetHold", {"hold_id": hold_id}, a_token)["hold"]
    check(got["status"] == "captured" and got["reference"] == f"grpc-{tag}", f"GetHold: {got}")
    holds = bank.call("ListHolds", {"account_id": a_id, "page_size": 10}, a_token)["holds"]
    check([int(h["id"]) for h in holds] == [int(second["hold"]["id"]), hold_id],
          f"ListHolds newest first: {holds}")
    after = bank.call("GetAccount", {"id": a_id}, a_token)["account"]
    check(int(after["balance"]) == -455 and int(after["available_balance"]) == -455,
          f"after the capture only the captured amount left: {after}")

    balance = bank.call("GetBalance", {"account_id": a_id}, a_token)
    check(int(balance["balance"]) == -455, f"GetBalance now: {balance}")
    start = bank.call("GetBalance", {"account_id": a_id, "at": "2000-01-01T00:00:00Z"}, a_token)
    check(int(start.get("balance", 0)) == 0, f"GetBalance before the first entry: {start}")

    listed = bank.call("ListTransfers", {"account_id": a_id, "direction": "out", "page_size": 2},
                       a_token)
    check(len(listed["transfers"]) == 2 and listed.get("next_page_token"),
          f"ListTransfers out, newest first, one page of 2: {listed}")

    undo = {"transfer_id": int(sent["transfer"]["id"]), "amount": 50, "reference": f"undo-{tag}"}
    bank.call("ReverseTransfer", undo, a_token, expect=grpc.StatusCode.PERMISSION_DENIED)
    reversed_ = bank.call("ReverseTransfer", undo, c_token)
    check(int(reversed_["transfer"]["reverses_transfer_id"]) == int(sent["transfer"]["id"])
          and int(reversed_["transfer"]["amount"]) == 50, f"ReverseTransfer in part: {reversed_}")
    bank.call("ReverseTransfer", undo, c_token,
              expect=grpc.StatusCode.FAILED_PRECONDITION, error="already_reversed")

    # Events: the account's history from the start, as a server stream.
    events = bank.stream("WatchAccount", {"account_id": a_id, "after_event_id": 0}, a_token,
                         count=3)
    check([e["type"] for e in events][:2] == ["account.created", "deposit.created"]
          and all(int(x["id"]) < int(y["id"]) for x, y in zip(events, events[1:])),
          f"WatchAccount from the start, in id order: {[e['type'] for e in events]}")
    bank.call("WatchAccount", {"account_id": a_id}, b_token,
              expect=grpc.StatusCode.NOT_FOUND, error="not_found")
    hook = bank.call("CreateWebhook", {"url": "http://127.0.0.1:9/grpc-check",
                                       "event_types": ["deposit.created"],
                                       "description": "grpc-check"}, c_token)
    check(hook["secret"].startswith("whsec_"), f"CreateWebhook shows the secret once: {hook}")
    bank.call("CreateWebhook", {"url": "http://127.0.0.1:9/x"}, a_token,
              expect=grpc.StatusCode.PERMISSION_DENIED)
    bank.call("CreateWebhook", {"url": "http://127.0.0.1:9/x", "event_types": ["nope"]}, c_token,
              expect=grpc.StatusCode.INVALID_ARGUMENT)
    hook_id = int(hook["webhook"]["id"])
    listed = bank.call("ListWebhooks", {}, c_token)
    check(hook_id in [int(w["id"]) for w in listed["webhooks"]] and "secret" not in str(listed),
          f"ListWebhooks: {listed}")
    rotated = bank.call("RotateWebhookSecret", {"id": hook_id}, c_token)
    check(rotated["secret"] != hook["secret"], "RotateWebhookSecret: a new secret")
    # Only an event the endpoint subscribes to, from after it was created, may be sent again.
    bank.call("RedeliverWebhook", {"id": hook_id, "event_id": int(events[1]["id"])}, c_token,
              expect=grpc.StatusCode.NOT_FOUND, error="not_found")
    bank.call("Deposit", {"account_id": a_id, "amount": 1, "currency": "USD"}, c_token)
    fresh = bank.stream("WatchAccount", {"account_id": a_id, "after_event_id": int(events[-1]["id"])},
                        a_token, count=10 ** 6, until="deposit.created")
    queued = bank.call("RedeliverWebhook", {"id": hook_id, "event_id": int(fresh[-1]["id"])},
                       c_token)
    check(int(queued["delivery_id"]) > 0, f"RedeliverWebhook: {queued}")
    bank.call("ListWebhookDeliveries", {"id": hook_id}, c_token)
    bank.call("DeleteWebhook", {"id": hook_id}, c_token)
    bank.call("DeleteWebhook", {"id": hook_id}, c_token, expect=grpc.StatusCode.NOT_FOUND)

    bank.call("LogoutUser", {"refresh_token": session["refresh_token"]}, a_token)
    bank.call("RenewAccessToken", {"refresh_token": session["refresh_token"]},
              expect=grpc.StatusCode.UNAUTHENTICATED)
    bank.call("GetAccount", {"id": a_id}, "not-a-token", expect=grpc.StatusCode.UNAUTHENTICATED)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/debug/simplebank")
    args = parser.parse_args()
    db_source = os.environ.get("DB_SOURCE")
    if not db_source:
        sys.exit("DB_SOURCE must name the database to serve (make grpc-check sets it)")

    server = Server(args.binary, db_source)
    try:
        channel = grpc.insecure_channel(server.grpc_address)
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while True:
            status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            check(time.monotonic() < deadline, "health reports SERVING within 30 s")
            time.sleep(0.2)

        bank = Bank(channel)
        print(f"reflection: {SERVICE} with {len(bank.methods)} RPCs; calling them")
        scenario(bank, server, args.binary, db_source)
        uncalled = sorted(set(bank.methods) - bank.called)
        check(not uncalled, f"every RPC was called; not: {uncalled}")
        channel.close()
    finally:
        code = server.stop()
    check(code == 0, f"the server exits 0 on SIGTERM (got {code})")

    logged = [line for line in server.lines if f"method=/{SERVICE}/" in line]
    check(len(logged) == bank.calls,
          f"one log line per RPC: {bank.calls} calls, {len(logged)} lines")
    for n, line in enumerate(logged):
        check(re.search(r'code="?[A-Z_]+', line) and "duration_ms=" in line
              and f"grpc-check-{n}" in line, f"log line {n} has code, duration, id: {line}")
    print(f"grpc-check: {len(bank.methods)} RPCs discovered by reflection, {bank.calls} calls, "
          f"{len(logged)} log lines, clean shutdown")


if __name__ == "__main__":
    main()
