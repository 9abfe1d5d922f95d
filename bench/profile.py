#!/usr/bin/env python3
"""Where the server's CPU goes under `make bench` load: perf samples of the release server,
summed by the crate (or simplebank module) each sample was in.

`make profile` builds the server with frame pointers and line tables into
target/profile-build (so the release binary `make bench` measures stays as it is), runs
bench/bench.py's row C (HTTP) and D (gRPC) at one concurrency over that binary, records the
server's process with `perf record -g` for part of each row, and prints one table per row.
About ten minutes on two cores, most of it bench.py's 10,000 logins (and a first build).

A sample is counted where it was taken: in the kernel (syscalls, the network stack, the
scheduler), in libc (malloc, free, memcpy: libc has no frame pointers, so its callers are
mostly lost), or in the innermost Rust frame that names a crate other than core, alloc, std
and futures. perf comes from Debian's linux-perf (installed if missing); tracing the server
needs root or a permissive kernel.perf_event_paranoid.
"""

import argparse
import collections
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = ROOT / "target" / "profile-build"
BINARY = BUILD / "release" / "simplebank"
# Frames of these crates are plumbing: the sample belongs to whatever called them.
PLUMBING = {"core", "alloc", "std", "futures_util", "futures_core", "pin_project_lite"}
PASETO = {"pasetors", "orion", "ct_codecs", "subtle", "zeroize"}
# A whole path (`core::future::future::Future`), so a plumbing crate's modules are skipped with it.
CRATE = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)::([A-Za-z_][A-Za-z0-9_]*)(?:::[A-Za-z_][A-Za-z0-9_]*)*")


def build():
    env = dict(os.environ, CARGO_TARGET_DIR=str(BUILD),
               RUSTFLAGS="-C force-frame-pointers=yes",
               CARGO_PROFILE_RELEASE_DEBUG="line-tables-only")
    subprocess.run(["cargo", "build", "--locked", "--release", "--quiet", "--features", "bench",
                    "--bin", "simplebank"], cwd=ROOT, env=env, check=True)


def where(frame):
    """The crate (or `simplebank::module`) a symbol belongs to, or None for plumbing."""
    for match in CRATE.finditer(frame):
        crate = match.group(1)
        if crate in PLUMBING:
            continue
        if crate in PASETO:
            return "PASETO (pasetors, orion, base64)"
        if crate == "simplebank":
            return f"simplebank::{match.group(2)}"
        return crate
    return None


def summarize(data):
    """(samples, [(share, place)]) from one perf.data file."""
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip,sym,dso",
                             "--no-inline"], capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    samples = 0
    for block in script.split("\n\n"):
        frames = [line.strip() for line in block.splitlines() if line.strip()]
        if not frames:
            continue
        samples += 1
        leaf = frames[0]
        if "kernel" in leaf:
            counts["kernel: syscalls, network stack, scheduler"] += 1
        elif "libc" in leaf:
            counts["libc: malloc, free, memcpy"] += 1
        else:
            counts[next((p for p in map(where, frames) if p), "other")] += 1
    return samples, [(n / max(samples, 1), place) for place, n in counts.most_common()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rows", default="C,D")
    parser.add_argument("--seconds", type=int, default=12, help="recorded time per row")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    if not shutil.which("perf"):
        subprocess.run([str(ROOT / "scripts" / "apt.sh"), "linux-perf"], check=True)
    if not os.environ.get("DB_SOURCE"):
        sys.exit("profile: DB_SOURCE must be set (make profile sets it)")
    print("profile: building the server with frame pointers (target/profile-build)", flush=True)
    build()
    rows = args.rows.split(",")
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        log = work / "bench.log"
        bench = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bench.py"), "--rows", args.rows,
             # One mirrored pair (two halves, not bench.py's default four slices), and the
             # first half long enough to outlast the recording that starts 5 s into it.
             "--clients", str(args.clients), "--seconds", str(2 * (args.seconds + 6)),
             "--pairs", "1", "--warmup", "3",
             "--binary", str(BINARY)],
            stdout=open(log, "w"), stderr=subprocess.STDOUT)
        recorded = {}
        for row in rows:
            # bench.py names each row as it starts it; its server is the one running then.
            marker = re.compile(rf"^bench: {re.escape(row)} .* at {args.clients} clients",
                                re.MULTILINE)
            while not marker.search(log.read_text()):
                if bench.poll() is not None:
                    sys.exit(f"profile: bench.py ended before row {row}:\n{log.read_text()}")
                time.sleep(0.5)
            time.sleep(5)  # past the warm-up and into the measured part
            # bench.py starts the server with group commit (rows C, D) first, then the one
            # without (C1, D1): the oldest process is the one these rows load.
            pid = subprocess.run(["pgrep", "-o", "-f", f"{BINARY} serve"], capture_output=True,
                                 text=True).stdout.strip()
            if not pid:
                sys.exit(f"profile: no server running for row {row}")
            data = work / f"{row}.data"
            subprocess.run(["perf", "record", "-F", "1999", "-g", "-p", pid, "-o", str(data),
                            "--", "sleep", str(args.seconds)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            recorded[row] = data
        if bench.wait() != 0:
            sys.exit(f"profile: bench.py failed:\n{log.read_text()}")
        table = [line for line in log.read_text().splitlines() if line.startswith("| ")]
        print("\n".join(table[:2] + [line for line in table[2:]
                                     if line.split("|")[1].split()[0] in rows]))
        for row, data in recorded.items():
            samples, shares = summarize(data)
            print(f"\n## row {row} at {args.clients} clients: {samples} samples of the server\n")
            print("| share | where |\n|---|---|")
            for share, place in shares[:args.top]:
                print(f"| {100 * share:.1f}% | {place} |")


if __name__ == "__main__":
    main()
