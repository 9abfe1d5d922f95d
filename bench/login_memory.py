#!/usr/bin/env python3
"""Memory of one server process under a login flood: idle, peak (the kernel's VmHWM) and 10 s
after. Not a test — the figures of doc/reliability.md's memory section come from here:

    make build-bench
    DB_SOURCE=$(scripts/db.sh url) bench/login_memory.py --concurrency 64 --seconds 10
    DB_SOURCE=... bench/login_memory.py --binary OTHER/simplebank --env GLIBC_TUNABLES=...

It starts `--binary` (default: this checkout's release build) on free ports, signs one user up,
runs the load generator's `flood` (that many clients logging the user in back to back) and
prints one line of figures. Login throttling is off for the run (one address floods).
"""

import argparse
import json
import pathlib
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import served  # noqa: E402

MIB = 1024 * 1024


def rss(pid, field="VmRSS"):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "simplebank"))
    parser.add_argument("--loadgen", default=str(ROOT / "target" / "release" / "simplebank-loadgen"))
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    args = parser.parse_args()
    db_source = served.require_db_source("login_memory")
    extra = dict(item.split("=", 1) for item in args.env)
    server, base, _ = served.serve(
        args.binary, ROOT / "target" / "login-memory-server.log", DB_SOURCE=db_source,
        MAIL_SENDER="log", LOGIN_ATTEMPTS_PER_IP="0", LOGIN_FAILURES_PER_USERNAME="0", **extra)
    try:
        user = f"mem_{secrets.token_hex(3)}"
        body = json.dumps({"username": user, "full_name": "Memory Probe",
                           "email": f"{user}@example.com", "password": "password123"}).encode()
        urllib.request.urlopen(urllib.request.Request(
            f"{base}/v1/users", data=body, headers={"Content-Type": "application/json"}), timeout=30)
        idle = rss(server.pid)
        flood = subprocess.run(
            [args.loadgen, "flood", "--http", base, "--username", user, "--password", "password123",
             "--concurrency", str(args.concurrency), "--seconds", str(args.seconds)],
            capture_output=True, text=True, check=True)
        ended = time.monotonic()
        peak = rss(server.pid, "VmHWM")
        right_after = rss(server.pid)
        while time.monotonic() - ended < 10:
            time.sleep(0.5)
        after = rss(server.pid)
        result = json.loads(flood.stdout.strip().splitlines()[-1])
        print(json.dumps({
            "binary": args.binary, "env": extra, "concurrency": args.concurrency,
            "seconds": args.seconds, "answers": result["by_status"],
            "idle_mib": round(idle / MIB, 1), "peak_mib": round(peak / MIB, 1),
            "right_after_mib": round(right_after / MIB, 1), "after_10s_mib": round(after / MIB, 1),
        }))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
