#!/usr/bin/env python3
"""`make readme-check`: the README, run as a user would run it, with checks on what it shows.

Every ```sh block of README.md is preceded by a marker comment that says what it is:

  <!-- readme-check: front-door -->   the opening `make run` / `make test`: `make run` is started
                                      from it, exactly as written (`make test` is .ci/run's step
                                      just before this one)
  <!-- readme-check: server -->       a command that serves until Ctrl-C: the running server gets
                                      SIGINT, as from a terminal, and this one is started instead
  <!-- readme-check: skip (why) -->   illustration only, not run (few, each with its reason)
  <!-- readme-check: NAME -->         run verbatim; CHECKS[NAME] below checks its output

A ```sh block without a marker, a marker without a check, or a check without a block fails the
run, so a block can neither be added unrun nor dropped unnoticed.

All blocks run in one bash (`set -euo pipefail`), one after another, so variables set by one
(`$ALICE`, `$A`) reach the next, from the project's directory, as a user in a second terminal
would. The server runs in its own process group and is stopped as Ctrl-C stops it: SIGINT to the
whole group. Readiness is observed (`/readyz` answers 200 and the gRPC port accepts), never slept
for. The database is a fresh one on the local cluster (`PG_DB`), dropped afterwards, so the
session's balances are the README's whatever ran before.
"""

import json
import os
import pathlib
import re
import secrets
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "readme-check"
MARKER = re.compile(r"<!-- readme-check: ([a-z-]+)(?: \((.+)\))? -->")


def blocks(readme):
    """[(marker, reason, code)] for every ```sh block, in order."""
    lines = readme.splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            marker = MARKER.fullmatch(lines[i - 1].strip()) if i > 0 else None
            if not marker:
                sys.exit(f"README.md:{i + 1}: a ```sh block without a <!-- readme-check: ... --> marker")
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            found.append((marker.group(1), marker.group(2), "\n".join(lines[i + 1:end]) + "\n", i + 1))
            i = end
        i += 1
    return found


# ---- what each block must show -------------------------------------------------------------

def json_values(text):
    """Every JSON object or array in `text`, in order (curl's and jq's output between other
    lines)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i] in "{[":
            try:
                value, end = decoder.raw_decode(text, i)
                values.append(value)
                i = end
                continue
            except json.JSONDecodeError:
                pass
        i += 1
    return values


def objects(text):
    return [v for v in json_values(text) if isinstance(v, dict)]


def expect(condition, what, text):
    if not condition:
        sys.exit(f"readme-check: expected {what}; the block printed:\n{text}")


def one(text, what, predicate):
    matches = [o for o in objects(text) if predicate(o)]
    expect(matches, what, text)
    return matches[0]


def check_curl_session(text):
    one(text, "alice's user", lambda o: o.get("user", {}).get("username") == "alice")
    expect('"bob"' in text and '"clerk"' in text, "bob's and clerk's usernames", text)
    expect("clerk is now a banker" in text, "`make banker` to say so", text)
    one(text, "the deposit's account with balance 10000",
        lambda o: o.get("balance") == 10000 and o.get("currency") == "USD")
    transfer = one(text, "the transfer's answer", lambda o: "transfer" in o and "from_entry" in o)
    expect(transfer["transfer"]["amount"] == 2500, "a transfer of 2500", text)
    expect(transfer["from_account"]["balance"] == 7500, "Alice's balance 7500 after it", text)
    expect(transfer["from_entry"]["amount"] == -2500 and transfer["to_entry"]["amount"] == 2500,
           "both entries, -2500 and +2500", text)
    expect("to_account" not in transfer and "balance_after" not in transfer["to_entry"],
           "nothing of Bob's balance in Alice's answer", text)
    one(text, "the refusal with code insufficient_funds",
        lambda o: o.get("code") == "insufficient_funds")
    statement = one(text, "the statement", lambda o: "entries" in o)
    expect([e["amount"] for e in statement["entries"]] == [-2500, 10000],
           "the statement's entries -2500 then +10000, newest first", text)


def check_email(text):
    one(text, '{"is_verified": true}', lambda o: o.get("is_verified") is True)
    expect(text.rstrip().endswith("true"), "is_email_verified true", text)


def check_idempotency(text):
    expect(len(re.findall(r"^HTTP/1\.1 201", text, re.M)) == 2, "201 twice", text)
    expect(len(re.findall(r"^idempotent-replayed: true", text, re.M | re.I)) == 1,
           "the second answer marked Idempotent-Replayed: true", text)
    ids = [o["transfer"]["id"] for o in objects(text) if "transfer" in o]
    expect(len(ids) == 2 and ids[0] == ids[1], "the same transfer id both times", text)


def check_account_controls(text):
    expect(text.count('"frozen"') == 1 and text.count('"active"') >= 1,
           "the status frozen, then active", text)
    one(text, "the refusal with code account_frozen", lambda o: o.get("code") == "account_frozen")
    expect(re.search(r"^100$", text, re.M), "Bob's 100 landing in the frozen account", text)
    one(text, "Alice's account back at 6500 after returning it",
        lambda o: o.get("balance") == 6500 and o.get("status") == "active")


def check_holds(text):
    one(text, "the pending hold reserving 2000 of 6500",
        lambda o: o.get("status") == "pending" and o.get("amount") == 2000
        and o.get("balance") == 6500 and o.get("available_balance") == 4500)
    one(text, "a capture of 1200 as one transfer",
        lambda o: o.get("status") == "captured" and o.get("captured_amount") == 1200
        and o.get("transfer_amount") == 1200)
    one(text, "Alice at 5300 with nothing reserved",
        lambda o: o.get("balance") == 5300 and o.get("available_balance") == 5300)
    expect('"hold_not_pending"' in text, "the second capture refused with hold_not_pending", text)
    expect(re.search(r"^1200$", text, re.M), "the refund of 1200 landing", text)


def check_history(text):
    one(text, "the payment found by its reference",
        lambda o: o.get("amount") == 2291 and o.get("reference") == "INV-2291")
    one(text, "the refund of 2291 naming the payment, Alice back at 6500",
        lambda o: o.get("amount") == 2291 and isinstance(o.get("reverses_transfer_id"), int)
        and o.get("balance_after") == 6500)
    expect(re.search(r"^4209$", text, re.M), "the balance right after paying: 6500 - 2291", text)
    expect(re.search(r"^0$", text, re.M), "0 at the end of last month", text)
    expect("entry_id,created_at,transfer_id,amount,amount_decimal" in text
           and ",10000,100.00," in text, "the CSV header and the first deposit", text)


def check_events(text):
    one(text, "the endpoint for transfer.created with its secret shown once",
        lambda o: o.get("event_types") == ["transfer.created"] and o.get("secret") == "whsec_...")
    expect(re.search(r"^verified \d+ transfer\.created 300$", text, re.M),
           "the receiver verified the delivery of the 300 transfer", text)
    one(text, "the delivery log's attempt answered 204",
        lambda o: o.get("event_type") == "transfer.created" and o.get("status_code") == 204
        and o.get("delivery_status") == "delivered")
    expect(re.search(r"^204$", text, re.M), "the endpoint deleted (204)", text)


def check_streams(text):
    one(text, "Bob's stream shows his transfers",
        lambda o: o.get("type") == "transfer.created" and isinstance(o.get("amount"), int))
    expect(re.search(r"^event: transfer\.created$", text, re.M)
           and re.search(r'^data: .*"amount": ?100[,}]', text, re.M),
           "the resumed SSE stream brings the new transfer of 100", text)
    expect(re.search(r'"type": "transfer\.created"', text) and '"data": "{' in text,
           "grpcurl's WatchAccount shows the event with its resource", text)
    expect(re.search(r"^6000$", text, re.M), "Alice back at 6000", text)


def check_grpc_clients(text):
    for tool in (ROOT / ".venv" / "bin" / "grpcurl", ROOT / ".tools" / "buf" / "node_modules" / ".bin" / "buf"):
        expect(tool.exists(), f"{tool} installed", text)


def check_grpcurl(text):
    expect("simplebank.v1.SimpleBank" in text and "grpc.health.v1.Health" in text,
           "`list` to name the bank and health services", text)
    one(text, "bob's user from LoginUser", lambda o: o.get("username") == "bob")
    one(text, "GetAccount's balance 6500 (10000 - 2500 - 1000)",
        lambda o: o.get("account", {}).get("balance") == "6500")
    transfer = one(text, "CreateTransfer's answer", lambda o: "transfer" in o)
    expect(transfer["transfer"]["amount"] == "500" and transfer["fromAccount"]["balance"] == "6000",
           "a transfer of 500 leaving 6000", text)
    expect("FailedPrecondition" in text and re.search(r'"code": ?"insufficient_funds"', text),
           "the refusal's status and ErrorInfo code", text)
    expect('"status": "SERVING"' in text, "health SERVING", text)


def check_buf_curl(text):
    expect("simplebank.v1.SimpleBank/CreateTransfer" in text, "--list-methods to list the RPCs", text)
    one(text, "GetAccount's balance 6000", lambda o: o.get("account", {}).get("balance") == "6000")
    expect('"status": "SERVING"' in text, "health SERVING", text)


def check_compat(text):
    one(text, "simple_bank's user shape", lambda o: o.get("username") == "alice" and "email" in o)
    one(text, "simple_bank's account shape, with the balance",
        lambda o: o.get("owner") == "alice" and o.get("balance") == 6000)


def check_command_line(text):
    for line in ("migrations applied", "bob is now a banker", "bob is now a depositor", "--ready-file"):
        expect(line in text, repr(line), text)


CHECKS = {
    "curl-session": check_curl_session,
    "email": check_email,
    "idempotency": check_idempotency,
    "account-controls": check_account_controls,
    "holds": check_holds,
    "history": check_history,
    "events": check_events,
    "streams": check_streams,
    "grpc-clients": check_grpc_clients,
    "grpcurl": check_grpcurl,
    "buf-curl": check_buf_curl,
    "compat": check_compat,
    "command-line": check_command_line,
}

# ---- the bash session ------------------------------------------------------------------------

PREAMBLE = r"""
set -euo pipefail
cd "$README_ROOT"
readme_server=""
readme_servers=0
readme_current=""
# On the way out, whatever happened: the output of a block that failed, and no server left
# holding the ports.
readme_exit() {
  local status=$?
  if [ -n "$readme_current" ]; then
    cat "$README_WORK/$readme_current.out"
    echo "readme-check: README block '$readme_current' failed (status $status)"
  fi
  if [ -n "$readme_server" ]; then kill -INT -- "-$readme_server" 2>/dev/null || true; wait || true; fi
}
trap readme_exit EXIT

# Starts "$1" in a process group of its own, as a terminal's foreground job; waits until the
# HTTP API is ready and the gRPC port accepts, or the command exits.
readme_start() {
  readme_servers=$((readme_servers + 1))
  local log="$README_WORK/server-$readme_servers.log"
  echo "readme-check: starting: $1  (log: $log)"
  # A non-interactive bash starts background jobs with SIGINT ignored, and make would inherit
  # that; a terminal's foreground job has it at its default, so restore that before exec.
  python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execvp("bash", ["bash", "-c", sys.argv[1]])' "$1" >"$log" 2>&1 </dev/null &
  readme_server=$!
  local deadline=$((SECONDS + 900))
  until curl -sf -o /dev/null localhost:8080/readyz && (: </dev/tcp/127.0.0.1/9090) 2>/dev/null; do
    if ! kill -0 "$readme_server" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "readme-check: '$1' did not come up; its log:"; tail -n 30 "$log"; return 1
    fi
    sleep 0.2
  done
  echo "readme-check: ready: $1"
}

# Ctrl-C: SIGINT to the server's whole process group. The server must finish its shutdown
# ("stopped", no error) and leave nothing running; GNU make itself always reports an interrupt
# by dying of SIGINT (130), which is how a terminal's Ctrl-C of `make run` ends.
readme_stop() {
  local log="$README_WORK/server-$readme_servers.log" status=0
  kill -INT -- "-$readme_server"
  wait "$readme_server" || status=$?
  if kill -0 -- "-$readme_server" 2>/dev/null; then
    echo "readme-check: processes of the server's group still run after Ctrl-C"; return 1
  fi
  if [ "$status" -ne 0 ] && [ "$status" -ne 130 ]; then
    echo "readme-check: the server command ended with status $status after Ctrl-C"; tail -n 30 "$log"; return 1
  fi
  readme_server=""
  grep -q 'stopped' "$log" || { echo "readme-check: no clean shutdown in $log"; tail -n 30 "$log"; return 1; }
  # Development's one expected warning: no TOKEN_SYMMETRIC_KEY, so a random key.
  if sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^\S+ +(ERROR|WARN) ' | grep -v 'TOKEN_SYMMETRIC_KEY is not set'; then
    echo "readme-check: the server logged the errors above"; return 1
  fi
  echo "readme-check: Ctrl-C stopped the server cleanly (status $status)"
}

# Runs one README block in this shell (its variables stay for the next), then its check.
readme_block() {
  local name=$1 file=$2 out="$README_WORK/$1.out"
  echo "---- README block '$name' (README.md:$3)"
  # Not `source ... || ...`: that would switch errexit off inside the block.
  readme_current=$name
  source "$file" >"$out" 2>&1
  readme_current=""
  cat "$out"
  python3 "$README_ROOT/scripts/readme_check.py" --check "$name" "$out"
}
"""


def script(found):
    """The bash session for the README's blocks."""
    parts, checked, started = [PREAMBLE], set(), False
    for n, (marker, reason, code, line) in enumerate(found):
        if marker == "skip":
            if not reason:
                sys.exit(f"README.md:{line}: a skipped block must say why: <!-- readme-check: skip (why) -->")
            parts.append(f"echo '---- README block at README.md:{line} not run: {reason}'")
        elif marker == "front-door":
            commands = [c for c in code.splitlines() if c.strip()]
            if len(commands) != 2 or not commands[0].startswith("make run") or not commands[1].startswith("make test"):
                sys.exit(f"README.md:{line}: the front door must be `make run` then `make test`")
            # `make test` ran just before this check (.ci/run); `make run` is started verbatim.
            parts.append(f"readme_start {shlex.quote(commands[0])}")
            started = True
        elif marker == "server":
            commands = [c for c in code.splitlines() if c.strip()]
            if len(commands) != 1:
                sys.exit(f"README.md:{line}: a server block holds one command")
            parts.append("readme_stop")
            parts.append(f"readme_start {shlex.quote(commands[0])}")
        else:
            if marker not in CHECKS:
                sys.exit(f"README.md:{line}: no check for block '{marker}' in scripts/readme_check.py")
            if not started:
                sys.exit(f"README.md:{line}: block '{marker}' comes before the front door's make run")
            path = WORK / f"{n:02d}-{marker}.sh"
            path.write_text(code)
            parts.append(f"readme_block {marker} {shlex.quote(str(path))} {line}")
            checked.add(marker)
    missing = set(CHECKS) - checked
    if missing:
        sys.exit(f"readme-check: checks without a README block: {sorted(missing)}")
    parts.append("readme_stop")
    parts.append("echo 'readme-check: every README block ran and showed what it says'")
    return "\n".join(parts) + "\n"


def ensure_jq():
    if subprocess.run(["sh", "-c", "command -v jq"], capture_output=True).returncode == 0:
        return
    print("readme-check: jq not found (the README uses it)", file=sys.stderr)
    subprocess.run([str(ROOT / "scripts" / "apt.sh"), "jq"], check=True)


def ports_free():
    import socket
    for port in (8080, 9090):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                sys.exit(f"readme-check: port {port} is in use; the README's `make run` needs it "
                         "(stop the other server first)")


def psql(sql):
    env = dict(os.environ, PGPASSWORD="secret")
    port = os.environ.get("PG_PORT", "54320")
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", port, "-U", "root", "-d", "postgres", "-qtA",
                    "-v", "ON_ERROR_STOP=1", "-c", sql], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--check":
        CHECKS[sys.argv[2]](pathlib.Path(sys.argv[3]).read_text())
        print(f"readme-check: '{sys.argv[2]}' showed what the README says")
        return
    found = blocks((ROOT / "README.md").read_text())
    WORK.mkdir(parents=True, exist_ok=True)
    for old in WORK.iterdir():
        old.unlink()
    session = WORK / "session.sh"
    session.write_text(script(found))
    ensure_jq()
    ports_free()
    # A fresh database on the local cluster: the README's figures assume nobody signed up yet.
    database = f"readme_{secrets.token_hex(4)}"
    # As from a new terminal: no DB_SOURCE, and none of the calling make's variables.
    env = {k: v for k, v in os.environ.items()
           if k not in ("DB_SOURCE", "MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    env.update(PG_DB=database, README_ROOT=str(ROOT), README_WORK=str(WORK))
    print(f"readme-check: {len(found)} blocks; database {database}", flush=True)
    status = subprocess.run(["bash", str(session)], env=env, cwd=ROOT, stdin=subprocess.DEVNULL).returncode
    try:
        psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    except subprocess.CalledProcessError:
        print(f"readme-check: could not drop {database}", file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    main()
