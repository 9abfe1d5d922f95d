#!/usr/bin/env bash
# Makes .venv/ hold exactly scripts/requirements-dev.txt and prints its python's path.
# Reinstalls only when the requirements change (a stamp keeps their checksum).
set -euo pipefail

project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$project_dir/.venv"
requirements="$project_dir/scripts/requirements-dev.txt"
stamp="$venv/.requirements.sha256"

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian splits venv out of python3.
    echo "venv: python3 -m venv failed; installing python3-venv" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
fi
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "venv: installing $(grep -c '^[a-z]' "$requirements") pinned packages into .venv/" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$wanted" >"$stamp"
fi
echo "$venv/bin/python"
