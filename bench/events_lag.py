#!/usr/bin/env python3
"""`make events-lag`: what webhooks and a live stream cost the bench's HTTP load, and how late
they are under it (not a test; figures for the note and doc/architecture.md).

One release server over the bench's database (fewer users: 1,000), `simplebank-loadgen` at 16
clients for `--seconds`, twice in the same run: first with no webhook endpoint and no stream
(the baseline), then with one endpoint for every event type (a local receiver that verifies each
delivery with PyPI's standardwebhooks, as `make events-check` does) and one SSE stream open on a
busy account. The receiver is Python on the same two cores: its CPU is part of what the second
run pays, and its speed bounds delivery throughput. Prints transfers/s of both (and their ratio), the outbox lag gauge sampled every
100 ms, and the time from each event's commit to its verified receipt."""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))
import bench  # noqa: E402
import events_check  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    base_url = events_check.served.require_db_source("events-lag")
    bench.ACCOUNTS = 1_000
    url = bench.setup(base_url)
    server = bench.Server(url, ROOT / "target" / "events-lag-server.log",
                          WEBHOOK_SECRET_KEY=events_check.WEBHOOK_KEY, WEBHOOK_ALLOW_PRIVATE="true")
    with tempfile.TemporaryDirectory() as work:
        tokens = bench.log_everyone_in(url, server, work)
        cpu = bench.Cpu(url)
        plain = bench.combine([bench.loadgen("http", server, tokens, args.clients, args.seconds,
                                             2, cpu, db=url)])

        clerk_token = None
        events_check.call(server.http, "POST", "/v1/users", {
            "username": "lagclerk", "full_name": "Lag Clerk", "email": "lagclerk@bench.invalid",
            "password": "lagclerk-password"})
        bench.psql(url, "UPDATE users SET role = 'banker' WHERE username = 'lagclerk'")
        clerk_token = events_check.ok(server.http, "POST", "/v1/users/login",
                                      {"username": "lagclerk",
                                       "password": "lagclerk-password"})["access_token"]
        receiver = events_check.Receiver().start()
        created = events_check.ok(server.http, "POST", "/v1/webhooks",
                                  {"url": receiver.url, "description": "events-lag"},
                                  clerk_token, 201)
        receiver.secret = created["secret"]
        first = int(bench.psql(url, "SELECT COALESCE(max(id), 0) FROM events"))
        # One stream on the first bench account, read as fast as it comes.
        stream = urllib.request.urlopen(urllib.request.Request(
            f"{server.http}/v1/accounts/{bench.FIRST_ID}/events",
            headers={"Authorization": f"Bearer {clerk_token}"}), timeout=600)
        streamed, stream_latency = [0], []

        def read_stream():
            try:
                for line in stream:
                    if line.startswith(b"data: "):
                        event = json.loads(line[6:])
                        streamed[0] += 1
                        stream_latency.append(
                            time.time() - events_check.parse_time(event["timestamp"]))
            except (OSError, ValueError, AttributeError):
                pass  # closed at the end of the run

        threading.Thread(target=read_stream, daemon=True).start()
        lags, stop = [], threading.Event()

        def sample():
            while not stop.is_set():
                lags.append(max(events_check.metric(server.http, "webhook_outbox_lag_seconds")
                                .values(), default=0))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        hooked = bench.combine([bench.loadgen("http", server, tokens, args.clients,
                                              args.seconds, 2, cpu, db=None)])
        produced = int(bench.psql(url, f"SELECT count(*) FROM events WHERE id > {first}"))
        drained_from = time.monotonic()
        events_check.wait_until("every event delivered",
                                lambda: len(receiver.ids()) >= produced, timeout=600, every=0.2)
        drained = time.monotonic() - drained_from
        stop.set()
        sampler.join()
        stream.close()
    server.stop()
    latency = sorted(receiver.latencies)
    stream_latency.sort()
    q = statistics.quantiles
    print(f"events-lag: {args.clients} clients, {args.seconds} s: {plain['tps']:.0f} transfers/s "
          f"without events' consumers, {hooked['tps']:.0f}/s with a webhook endpoint and a stream "
          f"(ratio {hooked['tps'] / plain['tps']:.2f}; p50 {plain['p50']} vs {hooked['p50']} ms)")
    print(f"events-lag: {produced} events delivered to the endpoint, {receiver.duplicates} "
          f"duplicates, {receiver.unverified} unverified; drained {drained:.1f} s after the load; "
          f"commit to receipt p50 {latency[len(latency) // 2] * 1000:.0f} ms, "
          f"p99 {q(latency, n=100)[98] * 1000:.0f} ms, max {latency[-1] * 1000:.0f} ms")
    print(f"events-lag: outbox lag gauge under load: median {statistics.median(lags):.2f} s, "
          f"max {max(lags):.2f} s ({len(lags)} samples)")
    if stream_latency:
        print(f"events-lag: the SSE stream got {streamed[0]} events, commit to receipt p50 "
              f"{stream_latency[len(stream_latency) // 2] * 1000:.0f} ms, max "
              f"{stream_latency[-1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
