#!/usr/bin/env python3
"""Runs the Dockerfile's builder stage on this machine, without Docker.

No container registry is reachable here, so the image cannot be built; this replays the
builder stage's own WORKDIR / COPY / RUN instructions, read from the Dockerfile (not a copy of
them), in a scratch directory, with this machine's Rust toolchain in place of the rust image.
It shows that the dependency-caching trick and the release build work from the files the build
context holds, and prints the size of the binary the runtime stage would copy.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def builder_stage(dockerfile):
    """The builder stage's instructions, continuation lines joined."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.rstrip()
        if not current and (not line or line.lstrip().startswith("#")):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    stage, inside = [], False
    for line in lines:
        if line.startswith("FROM "):
            if inside:
                break
            inside = " AS builder" in line
            continue
        if inside:
            stage.append(line)
    return stage


def main():
    stage = builder_stage(ROOT / "Dockerfile")
    if not stage:
        sys.exit("no builder stage found in the Dockerfile")
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="simplebank-docker-builder-"))
    workdir = scratch
    try:
        for instruction in stage:
            verb, _, rest = instruction.partition(" ")
            print(f"--> {instruction[:110]}", flush=True)
            if verb == "WORKDIR":
                workdir = scratch / rest.strip().lstrip("/")
                workdir.mkdir(parents=True, exist_ok=True)
            elif verb == "COPY":
                # Docker's rules for the forms used: files into a directory ending in `/`,
                # a directory's contents into the destination.
                *sources, dest = rest.split()
                dest_path = workdir / dest
                for source in sources:
                    path = ROOT / source
                    if path.is_dir():
                        shutil.copytree(path, dest_path, dirs_exist_ok=True)
                    elif dest.endswith("/"):
                        dest_path.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, dest_path / path.name)
                    else:
                        shutil.copy2(path, dest_path)
            elif verb == "RUN":
                subprocess.run(["bash", "-euo", "pipefail", "-c", rest], cwd=workdir, check=True)
            elif verb in ("ARG", "ENV"):
                continue
            else:
                sys.exit(f"unexpected instruction in the builder stage: {verb}")
        binary = workdir / "target/release/simplebank"
        size = binary.stat().st_size / (1024 * 1024)
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
        print(f"builder stage OK: {binary.relative_to(scratch)} ({size:.1f} MiB), {out.stdout.strip()}")
    finally:
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
