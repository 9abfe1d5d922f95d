"""`simplebank serve` on free loopback ports, for the scripts that drive a real server
(e2e.py, grpc_check.py, fuzz.py, fault.py, readme_check.py's helpers, bench/bench.py).

The server is started with `--ready-file`: once both listeners are bound and the database has
answered, it writes `{"http": "127.0.0.1:PORT", "grpc": "127.0.0.1:PORT", "pid": N}` there. The
scripts read their ports from that file, never from the human-readable log."""

import json
import os
import pathlib
import subprocess
import sys
import time


def wait_for_ready_file(path, process, timeout=60):
    """The parsed ready file once the server has written it; None if `process` exits first or
    `timeout` seconds pass."""
    path = pathlib.Path(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if process.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def serve(binary, log_path, args=("serve",), log_format="json", stderr_pipe=False, **settings):
    """(process, HTTP base URL, gRPC host:port). `settings` are environment variables over the
    caller's environment; the log goes to `log_path` (or, with `stderr_pipe`, to a pipe the
    caller reads). Exits the script if the server is not ready within a minute."""
    log_path = pathlib.Path(log_path)
    ready_path = log_path.with_name(log_path.name + ".ready.json")
    ready_path.unlink(missing_ok=True)
    env = dict(os.environ, HTTP_SERVER_ADDRESS="127.0.0.1:0", GRPC_SERVER_ADDRESS="127.0.0.1:0",
               LOG_FORMAT=log_format, NO_COLOR="1", **settings)
    log = open(log_path, "w")
    stderr = subprocess.PIPE if stderr_pipe else log
    process = subprocess.Popen([binary, *args, "--ready-file", str(ready_path)], env=env,
                               stdout=log, stderr=stderr, text=True)
    ready = wait_for_ready_file(ready_path, process)
    if ready is None:
        process.kill()
        sys.exit(f"the server was not ready within a minute; see {log_path}")
    return process, f"http://{ready['http']}", ready["grpc"]


def require_db_source(who):
    """DB_SOURCE, which the make targets set; exits with a message naming `who` otherwise."""
    return os.environ.get("DB_SOURCE") or sys.exit(f"{who}: DB_SOURCE must be set (the make target sets it)")
