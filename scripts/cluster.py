#!/usr/bin/env python3
"""`make cluster` / `make cluster-stop`: the production shape on one machine, loopback only.

    etcd ── Patroni ×3 ── PostgreSQL 15 ×3 (synchronous replication: a commit is acknowledged
                                            only once a standby has it)
    HAProxy "db"    one listener per API replica, each sending connections to whichever node
                    Patroni's REST API calls primary (GET /primary) — the role of RDS's endpoint.
                    One listener per replica, so one replica can be cut off from the database.
    simplebank ×3   the release server, one TOKEN_SYMMETRIC_KEY, one MAIL_DIR
    HAProxy "front" HTTP and gRPC (h2c) to the replicas, health-checked on /readyz

    scripts/cluster.py start    install what is missing, start everything, wait until the leader
                                is elected, a synchronous standby streams and every replica is up
                                behind the front load balancer; prints the addresses
    scripts/cluster.py stop     stop everything and forget it (the cluster is disposable)
    scripts/cluster.py status   Patroni's view and the load balancers' view

Every port is picked free at start and kept in the state file (target/cluster/state.json); the
PostgreSQL data lives under /tmp (the `postgres` user must reach it, and initdb refuses root).
scripts/chaos.py imports this module to break the pieces one at a time.
"""

import glob
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOGS = ROOT / "target" / "cluster"
STATE = LOGS / "state.json"
# Keyed by the project folder, so two clones on one machine keep apart.
RUN = pathlib.Path(f"/tmp/simplebank-cluster-{zlib.crc32(str(ROOT).encode()):08x}")
BINARY = ROOT / "target" / "release" / "simplebank"
NODES = 3
REPLICAS = 3
SUPERUSER = ("postgres", "cluster-superuser-secret")
REPLICATION = ("replicator", "cluster-replication-secret")
APP = ("root", "secret")  # simple_bank's development credentials, as scripts/db.sh
DATABASE = "simple_bank"
TOKEN_KEY = "cluster-key-of-exactly-32-bytes!"
# The server's own request timeout, and the front load balancer's: the server answers first
# (503 unavailable); the balancer's own answer only comes for a replica that stopped answering.
REQUEST_TIMEOUT_S = 5
FRONT_TIMEOUT_S = 7
# A stopping replica answers /readyz 503 for this long while it still serves, so the front
# balancer (checks every 0.5 s, down after 2 failures) has taken it out of rotation before it
# stops accepting: a rolling restart then costs no client an error (doc/reliability.md).
SHUTDOWN_DELAY = "3s"


def say(message):
    print(f"cluster: {message}", file=sys.stderr, flush=True)


def pg_bin():
    return sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]


def free_ports(n):
    """n distinct free loopback ports (held together while picked, so none repeats)."""
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def http_get(url, timeout=1.0):
    """(status, body) or (0, None) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return 0, None


def wait_until(what, predicate, timeout):
    """Polls `predicate` until it is truthy; its value, or exits naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"cluster: {what} did not happen within {timeout} s (logs: {LOGS})")


# --- installing ---------------------------------------------------------------------------------

def install():
    missing = [pkg for pkg, binary in (("etcd-server", "etcd"), ("haproxy", "haproxy"))
               if shutil.which(binary) is None and not os.path.exists(f"/usr/sbin/{binary}")]
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        missing.append("postgresql")
    if missing:
        subprocess.run([ROOT / "scripts" / "apt.sh", *missing], check=True)
    # Patroni runs as `postgres`, who cannot reach a Python under /root: install it with pip's
    # --target into a folder beside the data and run it with Debian's python3 (same 3.11 ABI).
    lib = RUN / "python"
    requirements = ROOT / "scripts" / "requirements-cluster.txt"
    stamp = lib / ".requirements"
    if not stamp.exists() or stamp.read_bytes() != requirements.read_bytes():
        say("installing Patroni (pinned, scripts/requirements-cluster.txt)")
        shutil.rmtree(lib, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-warn-conflicts", "--target", str(lib), "-r", str(requirements)], check=True,
                       env=dict(os.environ, PIP_ROOT_USER_ACTION="ignore"))
        stamp.write_bytes(requirements.read_bytes())
        subprocess.run(["chmod", "-R", "a+rX", str(RUN)], check=True)
    return lib


# --- the pieces ---------------------------------------------------------------------------------

def as_postgres(args):
    """A command line run as the `postgres` user when we are root (initdb and pg_ctl refuse root).
    setpriv execs the command itself (runuser forks and waits), so the pid we keep is Patroni's."""
    if os.geteuid() != 0:
        return list(args)
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *args]


def spawn(name, args, env=None, cwd="/"):
    """Starts a long-lived process in its own session (it outlives this script); returns its pid."""
    log = open(LOGS / f"{name}.log", "ab")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=env, cwd=cwd, start_new_session=True)
    return process.pid


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive: its parent (this script, for pieces it restarted) has not reaped it.
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def patroni_config(state, i):
    node = state["nodes"][i]
    data = RUN / "pg" / node["name"]
    return f"""scope: simplebank
name: {node["name"]}
log:
  level: INFO
restapi:
  listen: 127.0.0.1:{node["rest"]}
  connect_address: 127.0.0.1:{node["rest"]}
etcd3:
  hosts: 127.0.0.1:{state["etcd"]["client"]}
bootstrap:
  dcs:
    # 20 s is Patroni's smallest leader lease: a dead leader is replaced within about that.
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_node_count: 1
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 200
        wal_log_hints: "on"
        synchronous_commit: "on"
  initdb:
    - encoding: UTF8
    - auth-host: scram-sha-256
  pg_hba:
    - local all all trust
    - host replication {REPLICATION[0]} 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:{node["pg"]}
  connect_address: 127.0.0.1:{node["pg"]}
  data_dir: {data}
  bin_dir: {pg_bin()}
  pgpass: {RUN / "pg" / (node["name"] + ".pgpass")}
  authentication:
    superuser:
      username: {SUPERUSER[0]}
      password: {SUPERUSER[1]}
    replication:
      username: {REPLICATION[0]}
      password: {REPLICATION[1]}
    rewind:
      username: {SUPERUSER[0]}
      password: {SUPERUSER[1]}
  parameters:
    unix_socket_directories: {RUN / "pg"}
"""


def start_etcd(state):
    etcd = state["etcd"]
    data = RUN / "etcd"
    etcd["pid"] = spawn("etcd", [
        shutil.which("etcd") or "/usr/bin/etcd", "--name", "e0", "--data-dir", str(data),
        "--listen-client-urls", f"http://127.0.0.1:{etcd['client']}",
        "--advertise-client-urls", f"http://127.0.0.1:{etcd['client']}",
        "--listen-peer-urls", f"http://127.0.0.1:{etcd['peer']}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd['peer']}",
        "--initial-cluster", f"e0=http://127.0.0.1:{etcd['peer']}",
        "--listen-metrics-urls", f"http://127.0.0.1:{etcd['metrics']}"])
    wait_until("etcd healthy", lambda: http_get(f"http://127.0.0.1:{etcd['client']}/health")[0] == 200, 30)


def start_node(state, i):
    node = state["nodes"][i]
    config = RUN / "pg" / f"{node['name']}.yml"
    if not config.exists():
        config.write_text(patroni_config(state, i))
        if os.geteuid() == 0:
            shutil.chown(config, "postgres")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(RUN / "python"), "HOME": str(RUN / "pg"),
           "LANG": "C.UTF-8"}
    node["pid"] = spawn(f"patroni-{node['name']}", as_postgres(["/usr/bin/python3", "-m", "patroni",
                                                                   str(config)]), env=env)


def members(state):
    """Patroni's /cluster member list from any node that answers, or []."""
    for node in state["nodes"]:
        status, body = http_get(f"http://127.0.0.1:{node['rest']}/cluster")
        if status == 200:
            return json.loads(body).get("members", [])
    return []


def leader(state):
    """The node dict Patroni calls leader with PostgreSQL running, or None."""
    for member in members(state):
        if member.get("role") == "leader" and member.get("state") == "running":
            return next(n for n in state["nodes"] if n["name"] == member["name"])
    return None


def healthy(state):
    """A running leader, a streaming synchronous standby, and every node streaming or leading."""
    found = members(state)
    if len(found) != len(state["nodes"]):
        return False
    roles = [(m.get("role"), m.get("state")) for m in found]
    return (("leader", "running") in roles and ("sync_standby", "streaming") in roles
            and all(state_ in ("running", "streaming") for _, state_ in roles))


def postmaster_pid(node):
    try:
        return int((RUN / "pg" / node["name"] / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def psql(port, sql, user=SUPERUSER, database="postgres"):
    return subprocess.run([f"{pg_bin()}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", user[0], "-d", database,
                           "-v", "ON_ERROR_STOP=1", "-qAtc", sql], check=True, capture_output=True, text=True,
                          env=dict(os.environ, PGPASSWORD=user[1], PGCONNECT_TIMEOUT="3")).stdout.strip()


def create_app_database(state):
    port = leader(state)["pg"]
    if psql(port, f"SELECT count(*) FROM pg_roles WHERE rolname = '{APP[0]}'") == "0":
        psql(port, f"CREATE ROLE {APP[0]} LOGIN PASSWORD '{APP[1]}'")
    if psql(port, f"SELECT count(*) FROM pg_database WHERE datname = '{DATABASE}'") == "0":
        psql(port, f"CREATE DATABASE {DATABASE} OWNER {APP[0]}")


def db_haproxy_config(state):
    lines = [
        "global",
        f"  stats socket {RUN / 'db-haproxy.sock'} mode 600 level admin",
        "  maxconn 2000",
        "defaults",
        "  mode tcp",
        "  timeout connect 2s",
        "  timeout client 30m",
        "  timeout server 30m",
        "  timeout check 1s",
        # A node that stops being primary is dropped within a second, and the connections through
        # it are cut: the server must reconnect, and finds the new primary.
        "  default-server inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions",
    ]
    for r, replica in enumerate(state["replicas"]):
        lines += [f"listen db_r{r}", f"  bind 127.0.0.1:{replica['db_port']}"]
        if r == 0:
            lines += ["  option httpchk GET /primary", "  http-check expect status 200"]
        for node in state["nodes"]:
            check = (f"check port {node['rest']}" if r == 0 else f"track db_r0/{node['name']}")
            lines.append(f"  server {node['name']} 127.0.0.1:{node['pg']} {check}")
    return "\n".join(lines) + "\n"


ERROR_BODY = (b'{"error":{"code":"unavailable","message":"no replica answered in time; the request '
              b'may or may not have been carried out"}}')


def front_haproxy_config(state):
    front = state["front"]
    error_file = RUN / "503.http"
    error_file.write_bytes(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                           b"Retry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\n"
                           b"Content-Length: " + str(len(ERROR_BODY)).encode() + b"\r\n\r\n" + ERROR_BODY)
    lines = [
        "global",
        f"  stats socket {RUN / 'front-haproxy.sock'} mode 600 level admin",
        "  maxconn 4000",
        # Every request that did not end well, with HAProxy's termination flags (which side
        # closed, and in which phase), into target/cluster/haproxy-front.log.
        "  log stdout format raw local0 info",
        "defaults",
        "  log global",
        "  option httplog",
        "  option dontlog-normal",
        "  mode http",
        "  timeout connect 1s",
        "  timeout client 60s",
        f"  timeout server {FRONT_TIMEOUT_S}s",
        "  timeout check 1s",
        # Only a request that never reached a replica is sent to another: a POST that reached one
        # may have moved money, and only the client (with its Idempotency-Key) may repeat it.
        "  retries 2",
        "  retry-on conn-failure",
        "  option redispatch",
        # The balancer's own errors (no replica up, one died mid-request, one stopped answering)
        # speak the API's error table: 503 unavailable, which gRPC clients read as UNAVAILABLE.
        f"  errorfile 502 {error_file}",
        f"  errorfile 503 {error_file}",
        f"  errorfile 504 {error_file}",
        "  default-server inter 500ms fall 2 rise 2",
        "frontend http_in",
        "  option dontlog-normal",
        f"  bind 127.0.0.1:{front['http']}",
        "  default_backend api_http",
        "frontend grpc_in",
        "  option dontlog-normal",
        f"  bind 127.0.0.1:{front['grpc']} proto h2",
        "  default_backend api_grpc",
        "backend api_http",
        "  balance roundrobin",
        "  option httpchk GET /readyz",
        "  http-check expect status 200",
    ]
    lines += [f"  server r{r} 127.0.0.1:{replica['http']} check" for r, replica in enumerate(state["replicas"])]
    lines += ["backend api_grpc", "  balance roundrobin"]
    # The gRPC side of a replica follows its HTTP side's /readyz (one process, one database check).
    lines += [f"  server r{r} 127.0.0.1:{replica['grpc']} proto h2 track api_http/r{r}"
              for r, replica in enumerate(state["replicas"])]
    return "\n".join(lines) + "\n"


def start_haproxy(state, which):
    config = RUN / f"{which}-haproxy.cfg"
    config.write_text(db_haproxy_config(state) if which == "db" else front_haproxy_config(state))
    subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], check=True)
    state[f"{which}_haproxy_pid"] = spawn(f"haproxy-{which}", ["haproxy", "-db", "-f", str(config)])


def haproxy_command(which, command):
    """One command on a balancer's runtime API (its stats socket); the answer's text."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(RUN / f"{which}-haproxy.sock"))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def backend_status(which, backend):
    """{server: status} of one backend, from the runtime API's `show stat`."""
    try:
        rows = haproxy_command(which, "show stat").splitlines()
    except OSError:  # not listening yet, or gone
        return {}
    if not rows:
        return {}
    header = rows[0].lstrip("# ").split(",")
    out = {}
    for row in rows[1:]:
        fields = dict(zip(header, row.split(",")))
        if fields.get("pxname") == backend and fields.get("svname") not in ("FRONTEND", "BACKEND"):
            out[fields["svname"]] = fields.get("status", "")
    return out


def replica_env(state, r):
    replica = state["replicas"][r]
    return dict(
        os.environ,
        DB_SOURCE=f"postgresql://{APP[0]}:{APP[1]}@127.0.0.1:{replica['db_port']}/{DATABASE}?sslmode=disable",
        HTTP_SERVER_ADDRESS=f"127.0.0.1:{replica['http']}", GRPC_SERVER_ADDRESS=f"127.0.0.1:{replica['grpc']}",
        TOKEN_SYMMETRIC_KEY=TOKEN_KEY, LOG_FORMAT="json", NO_COLOR="1", MAIL_SENDER="file",
        MAIL_DIR=str(LOGS / "mail"), REQUEST_TIMEOUT=f"{REQUEST_TIMEOUT_S}s", LOGIN_ATTEMPTS_PER_IP="0",
        LOGIN_FAILURES_PER_USERNAME="0", WEBHOOK_ALLOW_PRIVATE="true",
        EVENTS_POLL_INTERVAL="100ms", WEBHOOK_SECRET_KEY="cluster-webhook-key-of-32-bytes!",
        SHUTDOWN_DELAY=SHUTDOWN_DELAY, SHUTDOWN_GRACE=f"{FRONT_TIMEOUT_S}s",
        **state.get("replica_settings", {}))


def start_replica(state, r, migrate=False):
    replica = state["replicas"][r]
    ready = LOGS / f"replica-{r}.ready.json"
    ready.unlink(missing_ok=True)
    args = [str(BINARY), "serve", "--ready-file", str(ready)] + ([] if migrate else ["--no-migrate"])
    replica["pid"] = spawn(f"replica-{r}", args, env=replica_env(state, r), cwd=str(ROOT))
    replica["ready_file"] = str(ready)


def replica_ready(state, r):
    return http_get(f"http://127.0.0.1:{state['replicas'][r]['http']}/readyz")[0] == 200


def in_rotation(state, r):
    """The front balancer sends this replica traffic again (its health check passed)."""
    return backend_status("front", "api_http").get(f"r{r}", "").startswith("UP")


def save(state):
    STATE.write_text(json.dumps(state, indent=2))


def load():
    if not STATE.exists():
        raise SystemExit("cluster: not running (no target/cluster/state.json); make cluster starts it")
    return json.loads(STATE.read_text())


def start(replicas=REPLICAS, replica_settings=None):
    if STATE.exists():
        stop(quiet=True)
    if not BINARY.exists():
        raise SystemExit(f"cluster: {BINARY} is missing; make build-bench builds it")
    started = time.monotonic()
    shutil.rmtree(RUN / "pg", ignore_errors=True)
    shutil.rmtree(RUN / "etcd", ignore_errors=True)
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    RUN.mkdir(parents=True, exist_ok=True)
    os.chmod(RUN, 0o755)
    install()
    (RUN / "pg").mkdir()
    if os.geteuid() == 0:
        shutil.chown(RUN / "pg", "postgres")
    os.chmod(RUN / "pg", 0o700)
    ports = iter(free_ports(3 + 2 * NODES + 4 * replicas + 2))
    state = {
        "etcd": {"client": next(ports), "peer": next(ports), "metrics": next(ports)},
        "nodes": [{"name": f"n{i}", "pg": next(ports), "rest": next(ports)} for i in range(NODES)],
        "replicas": [{"http": next(ports), "grpc": next(ports), "db_port": next(ports), "metrics": next(ports)}
                     for _ in range(replicas)],
        "front": {"http": next(ports), "grpc": next(ports)},
        "replica_settings": replica_settings or {},
    }
    save(state)
    start_etcd(state)
    say(f"etcd up ({time.monotonic() - started:.0f} s)")
    # The first node bootstraps alone, so it is the leader; the others then clone it.
    start_node(state, 0)
    save(state)
    wait_until("a Patroni leader", lambda: leader(state), 90)
    for i in range(1, NODES):
        start_node(state, i)
    save(state)
    wait_until("a synchronous standby and every node streaming", lambda: healthy(state), 120)
    say(f"PostgreSQL up: leader {leader(state)['name']}, synchronous standby streaming "
        f"({time.monotonic() - started:.0f} s)")
    create_app_database(state)
    start_haproxy(state, "db")
    save(state)
    wait_until("the database balancer finding the leader",
               lambda: any(s.startswith("UP") for s in backend_status("db", "db_r0").values()), 30)
    start_replica(state, 0, migrate=True)
    save(state)
    wait_until("replica 0 ready (migrated)", lambda: replica_ready(state, 0), 120)
    for r in range(1, replicas):
        start_replica(state, r)
    save(state)
    for r in range(replicas):
        wait_until(f"replica {r} ready", lambda r=r: replica_ready(state, r), 60)
    start_haproxy(state, "front")
    save(state)
    wait_until("every replica in the front balancer's rotation",
               lambda: all(in_rotation(state, r) for r in range(replicas)), 30)
    say(f"up in {time.monotonic() - started:.0f} s: HTTP http://127.0.0.1:{state['front']['http']}, "
        f"gRPC 127.0.0.1:{state['front']['grpc']} (h2c), {replicas} replicas, leader {leader(state)['name']}")
    return state


def stop(quiet=False):
    if not STATE.exists():
        if not quiet:
            say("not running")
        return
    state = json.loads(STATE.read_text())
    pids = [r.get("pid") for r in state.get("replicas", [])]
    pids += [state.get("front_haproxy_pid"), state.get("db_haproxy_pid")]
    terminate([p for p in pids if p])
    # Patroni stops its PostgreSQL on SIGTERM; a node whose Patroni was killed may have left one.
    terminate([n.get("pid") for n in state.get("nodes", []) if n.get("pid")])
    terminate([p for p in (postmaster_pid(n) for n in state.get("nodes", [])) if p])
    terminate([state.get("etcd", {}).get("pid")] if state.get("etcd", {}).get("pid") else [])
    shutil.rmtree(RUN / "pg", ignore_errors=True)
    shutil.rmtree(RUN / "etcd", ignore_errors=True)
    STATE.unlink(missing_ok=True)
    if not quiet:
        say(f"stopped; logs kept in {LOGS}")


def terminate(pids, timeout=30):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def status():
    state = load()
    for member in members(state):
        print(f"{member['name']}: {member.get('role')} {member.get('state')} timeline {member.get('timeline')}")
    for backend in ("api_http", "api_grpc"):
        print(backend, backend_status("front", backend))
    print("db_r0", backend_status("db", "db_r0"))


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "start":
        start()
    elif command == "stop":
        stop()
    elif command == "status":
        status()
    else:
        raise SystemExit("usage: scripts/cluster.py start|stop|status")


if __name__ == "__main__":
    main()
