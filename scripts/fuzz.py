#!/usr/bin/env python3
"""`make fuzz`: schemathesis against the HTTP API, generating requests from the server's own
OpenAPI document.

Starts `simplebank serve` on free ports against DB_SOURCE, signs up a depositor with an account
(usernames get a per-run suffix, so an existing database is fine) and runs schemathesis (pinned in
scripts/requirements-fuzz.txt, installed into .venv/) authenticated as that user, for
FUZZ_SECONDS (default 120). The SSE route is left out (a stream never ends). The run fails on any response that is a 5xx, has a status the document
does not list for the operation, or whose body, content type or headers do not match it.

Schemathesis's "coverage" phase is left out: with the pinned hypothesis it stops on an internal
error ("AST constructor recursion depth mismatch") that has nothing to do with the API. The
"examples" and "fuzzing" phases run.
"""

import json
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import urllib.request

import served

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
])


def call(url, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def main():
    db_source = os.environ.get("DB_SOURCE") or sys.exit("DB_SOURCE must be set (make fuzz sets it)")
    seconds = os.environ.get("FUZZ_SECONDS", "120")
    python = subprocess.run([ROOT / "scripts" / "venv.sh", ROOT / "scripts" / "requirements-fuzz.txt"],
                            check=True, capture_output=True, text=True).stdout.strip()
    schemathesis = pathlib.Path(python).parent / "schemathesis"
    binary = ROOT / "target" / "debug" / "simplebank"
    user = f"fuzz_{secrets.token_hex(3)}"
    log_path = ROOT / "target" / "fuzz-server.log"
    server, base, _ = served.serve(binary, log_path, DB_SOURCE=db_source)
    try:
        call(f"{base}/v1/users", {"username": user, "full_name": "Fuzz Er",
                                  "email": f"{user}@example.com", "password": "password123"})
        token = call(f"{base}/v1/users/login", {"username": user, "password": "password123"})["access_token"]
        call(f"{base}/v1/accounts", {"currency": "USD"}, token)
        print(f"fuzz: schemathesis against {base} for {seconds} s as {user}", flush=True)
        run = subprocess.run([schemathesis, "run", f"{base}/api-docs/openapi.json",
                              "--header", f"Authorization: Bearer {token}",
                              "--checks", CHECKS, "--phases", "examples,fuzzing",
                              "--max-time", seconds, "--workers", "2",
                              # A stream of events never ends by design (a generated request for
                              # the caller's own account would hang); its inputs are covered by
                              # api::events and make events-check.
                              "--exclude-path", "/v1/accounts/{id}/events",
                              "--suppress-health-check", "all"],
                             env=dict(os.environ, NO_COLOR="1"))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    errors = [line for line in log_path.read_text().splitlines()
              if '"level":"ERROR"' in line]
    if errors:
        print(f"fuzz: the server logged {len(errors)} errors, e.g. {errors[0]}", file=sys.stderr)
        sys.exit(1)
    if server.returncode != 0:
        sys.exit(f"fuzz: the server exited with {server.returncode} on SIGTERM")
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
