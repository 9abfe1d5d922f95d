"""`simplebank serve` on free loopback ports, for the scripts that drive a real server
(fuzz.py, fault.py, bench/bench.py): start it with JSON logs and read from its log where it
listens."""

import os
import pathlib
import re
import subprocess
import sys
import time

HTTP = re.compile(r'"message":"HTTP API listening","address":"([^"]+)"')
GRPC = re.compile(r'"message":"gRPC API listening","address":"([^"]+)"')


def serve(binary, log_path, args=("serve",), **settings):
    """(process, HTTP base URL, gRPC host:port). `settings` are environment variables over the
    caller's environment; the log goes to `log_path`. Exits the script if the server does not
    come up within a minute."""
    log_path = pathlib.Path(log_path)
    env = dict(os.environ, HTTP_SERVER_ADDRESS="127.0.0.1:0", GRPC_SERVER_ADDRESS="127.0.0.1:0",
               LOG_FORMAT="json", NO_COLOR="1", **settings)
    log = open(log_path, "w")
    process = subprocess.Popen([binary, *args], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        text = log_path.read_text()
        http, grpc = HTTP.search(text), GRPC.search(text)
        if http and grpc:
            return process, f"http://{http.group(1)}", grpc.group(1)
        time.sleep(0.1)
    process.kill()
    sys.exit(f"the server did not start; see {log_path}")
