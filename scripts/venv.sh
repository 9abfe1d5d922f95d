#!/usr/bin/env bash
# Makes .venv/ hold the pinned packages of the given requirement files (default:
# scripts/requirements-dev.txt) and prints its python's path. Each file is reinstalled only when
# it changes (a stamp keeps its checksum).
#
#   scripts/venv.sh                                   the gRPC check's clients
#   scripts/venv.sh scripts/requirements-validate.txt the offline validators
set -euo pipefail

project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$project_dir/.venv"
[ "$#" -gt 0 ] || set -- "$project_dir/scripts/requirements-dev.txt"

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian splits venv out of python3.
    echo "venv: python3 -m venv failed; installing python3-venv" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
fi
for requirements in "$@"; do
  stamp="$venv/.$(basename "$requirements").sha256"
  wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "venv: installing $(grep -c '^[a-z]' "$requirements") pinned packages from $(basename "$requirements")" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$wanted" >"$stamp"
  fi
done
echo "$venv/bin/python"
