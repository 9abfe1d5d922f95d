#!/usr/bin/env python3
"""`make scaling`: transfers/s through the front load balancer with 1, 2 and 3 replicas against
the same PostgreSQL primary, in one run (doc/scaling.md quotes it; not a test).

Starts scripts/cluster.py's stack (etcd, Patroni ×3 with synchronous replication, HAProxy for
the database and in front of three release servers), signs up CUSTOMERS customers with money
through the front balancer, then for each replica count takes the others out of the
balancer's rotation (its runtime API) and runs `simplebank-loadgen` through the balancer, HTTP
and then gRPC, CLIENTS clients each, after a warm-up. One more row, replica 0 without the
balancer, shows what the balancer itself costs. Everything shares this machine's cores, so the
figures say how the shape behaves, not how many replicas EKS needs: see doc/scaling.md.
"""

import concurrent.futures
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import cluster  # noqa: E402
import chaos  # noqa: E402  (its HTTP helper and sign-up code)

LOADGEN = ROOT / "target" / "release" / "simplebank-loadgen"
CUSTOMERS = 64
CLIENTS = 64
SECONDS = 10
WARMUP = 2


def customers(base, banker_token, run):
    def one(i):
        name = f"sc_{run}_{i}"
        chaos.request("POST", f"{base}/v1/users", {"username": name, "full_name": "Scaling Customer",
                                                   "email": f"{name}@example.com", "password": "password123"})
        token = chaos.request("POST", f"{base}/v1/users/login",
                              {"username": name, "password": "password123"})[1]["access_token"]
        status, account = chaos.request("POST", f"{base}/v1/accounts", {"currency": "USD"}, token)
        assert status == 201, (status, account)
        status, _ = chaos.request("POST", f"{base}/v1/accounts/{account['account']['id']}/deposits",
                                  {"amount": 100_000_000, "currency": "USD"}, banker_token)
        assert status == 201, status
        return f"{token} {account['account']['id']}\n"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return "".join(pool.map(one, range(CUSTOMERS)))


def rotation(state, serving):
    """Only replicas `serving` in the front balancer's rotation; waits until it says so."""
    for r in range(len(state["replicas"])):
        verb = "enable" if r in serving else "disable"
        for backend in ("api_http", "api_grpc"):
            cluster.haproxy_command("front", f"{verb} server {backend}/r{r}")
    cluster.wait_until(f"replicas {sorted(serving)} alone in rotation", lambda: all(
        cluster.in_rotation(state, r) == (r in serving) for r in range(len(state["replicas"]))), 30)


def calls(state):
    """Money-path database calls and the movements they carried, summed over every replica."""
    total = {"calls": 0.0, "movements": 0.0}
    for replica in state["replicas"]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{replica['http']}/metrics", timeout=30).read().decode()

        def value(name):
            found = re.search(name + r" (\d+(?:\.\d+)?(?:e[+-]?\d+)?)\n", text)
            return float(found.group(1)) if found else 0.0
        single = value("db_money_single_calls_total")
        total["calls"] += single + value("db_money_batch_calls_total")
        total["movements"] += single + value("db_money_batched_movements_total")
    return total


def cpu(names):
    """CPU seconds used so far by every process whose command name is in `names`."""
    used = 0.0
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if name in names:
            used += (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    return used


def measure(state, api, url, tokens):
    command = [str(LOADGEN), "run", "--api", api, "--url", url, "--tokens", str(tokens),
               "--concurrency", str(CLIENTS)]
    subprocess.run(command + ["--seconds", str(WARMUP), "--warmup", "0"], check=True, capture_output=True)
    before, servers, database = calls(state), cpu({"simplebank"}), cpu({"postgres"})
    out = subprocess.run(command + ["--seconds", str(SECONDS), "--warmup", "0"], check=True,
                         capture_output=True, text=True).stdout
    after = calls(state)
    report = json.loads(out.strip().splitlines()[-1])
    moved = max(after["movements"] - before["movements"], 1)
    report["per_call"] = moved / max(after["calls"] - before["calls"], 1)
    report["server_us"] = (cpu({"simplebank"}) - servers) / moved * 1e6
    report["db_us"] = (cpu({"postgres"}) - database) / moved * 1e6
    return report


def main():
    if not LOADGEN.exists():
        raise SystemExit("scaling: target/release/simplebank-loadgen is missing; make build-bench builds it")
    started = time.monotonic()
    state = cluster.start()
    rows = []
    try:
        run = str(int(time.time()))[-6:]
        base, banker_token, _ = chaos.set_up(state, run)
        tokens = cluster.LOGS / "scaling-tokens.txt"
        tokens.write_text(customers(base, banker_token, run))
        front_http = f"http://127.0.0.1:{state['front']['http']}"
        front_grpc = f"http://127.0.0.1:{state['front']['grpc']}"
        replica = state["replicas"][0]
        for label, serving, http, grpc in (
                ("1 replica, no balancer", {0}, f"http://127.0.0.1:{replica['http']}",
                 f"http://127.0.0.1:{replica['grpc']}"),
                ("1 replica", {0}, front_http, front_grpc),
                ("2 replicas", {0, 1}, front_http, front_grpc),
                ("3 replicas", {0, 1, 2}, front_http, front_grpc)):
            rotation(state, serving)
            row = {"setup": label}
            for api, url in (("http", http), ("grpc", grpc)):
                report = measure(state, api, url, tokens)
                row[api] = report
                print(f"scaling: {label}, {api}: {report['tps']:.0f}/s, p50 {report['p50_ms']:.1f} ms, "
                      f"p99 {report['p99_ms']:.1f} ms, {report['per_call']:.1f} transfers per database "
                      f"call, CPU per transfer: servers {report['server_us']:.0f} µs, PostgreSQL "
                      f"{report['db_us']:.0f} µs, errors {report['errors']}", flush=True)
            rows.append(row)
    finally:
        cluster.stop()
    print(f"\n{CLIENTS} clients, {SECONDS} s per row after {WARMUP} s of warm-up, {CUSTOMERS} customers; "
          f"synchronous replication to one standby:\n")
    print("| setup | HTTP transfers/s | HTTP p50 / p99 ms | gRPC transfers/s | gRPC p50 / p99 ms "
          "| transfers per database call (HTTP) | CPU µs per transfer, servers / PostgreSQL (HTTP) | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        h, g = row["http"], row["grpc"]
        errors = sum(h["errors"].values()) + sum(g["errors"].values())
        print(f"| {row['setup']} | {h['tps']:.0f} | {h['p50_ms']:.1f} / {h['p99_ms']:.1f} | {g['tps']:.0f} | "
              f"{g['p50_ms']:.1f} / {g['p99_ms']:.1f} | {h['per_call']:.1f} | "
              f"{h['server_us']:.0f} / {h['db_us']:.0f} | {errors} |")
    print(f"\nscaling: done in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
