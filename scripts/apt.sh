#!/usr/bin/env bash
# Installs Debian packages (as root, or through sudo), for the targets that need a tool the
# machine lacks: scripts/apt.sh jq chromium
set -euo pipefail
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "apt: installing $* (Debian packages)" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null
