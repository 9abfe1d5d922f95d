#!/usr/bin/env python3
"""`make e2e`: the Postman collection, run by newman against a freshly started server.

Starts `simplebank serve` on free ports against DB_SOURCE (usernames get a per-run suffix, so an
existing database is fine), makes the collection's banker the way an operator does (sign-up over
HTTP, then `simplebank user set-role`), runs doc/postman with newman (installed from npm into
.tools/, pinned), and stops the server with SIGTERM.
"""

import json
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import served  # noqa: E402  (scripts/served.py: start the server, read its ready file)
NEWMAN = "newman@6.2.2"
TOOLS = ROOT / ".tools" / "npm"


def newman():
    binary = TOOLS / "node_modules" / ".bin" / "newman"
    if binary.exists():
        return binary
    if subprocess.run(["sh", "-c", "command -v npm"], capture_output=True).returncode != 0:
        print("e2e: npm not found; installing Debian's npm", file=sys.stderr)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "npm"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    TOOLS.mkdir(parents=True, exist_ok=True)
    print(f"e2e: installing {NEWMAN} into .tools/npm", file=sys.stderr)
    subprocess.run(["npm", "install", "--prefix", str(TOOLS), "--no-save", "--no-package-lock",
                    "--no-audit", "--no-fund", "--loglevel=error", NEWMAN], check=True)
    return binary


def start_server(binary, db_source):
    process, base, _ = served.serve(binary, ROOT / "target" / "e2e-server.log", log_format="pretty",
                                    DB_SOURCE=db_source)
    return process, base


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def main():
    db_source = os.environ.get("DB_SOURCE") or sys.exit("DB_SOURCE must be set (make e2e sets it)")
    binary = ROOT / "target" / "debug" / "simplebank"
    tool = newman()
    run = secrets.token_hex(3)
    clerk, clerk_password = f"clerk_{run}", "clerk12345"
    server, base_url = start_server(binary, db_source)
    try:
        post(f"{base_url}/v1/users", {"username": clerk, "full_name": "Bank Clerk",
                                      "email": f"{clerk}@example.com", "password": clerk_password})
        subprocess.run([binary, "user", "set-role", clerk, "banker"], check=True,
                       env=dict(os.environ, DB_SOURCE=db_source, NO_COLOR="1"), stdout=subprocess.DEVNULL)
        postman = ROOT / "doc" / "postman"
        result = subprocess.run([
            tool, "run", postman / "simplebank.postman_collection.json",
            "--environment", postman / "simplebank.postman_environment.json",
            "--env-var", f"base_url={base_url}", "--env-var", f"run={run}",
            "--env-var", f"clerk={clerk}", "--env-var", f"clerk_password={clerk_password}",
            "--bail", "--color", "off",
        ])
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    if result.returncode != 0:
        sys.exit("e2e: the Postman collection failed (server log: target/e2e-server.log)")
    if code != 0:
        sys.exit(f"e2e: the server exited {code} on SIGTERM")
    print("e2e: the Postman collection passed against a fresh server")


if __name__ == "__main__":
    main()
