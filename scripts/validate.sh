#!/usr/bin/env bash
# Offline checks of the deployment files (`make validate`): nothing is pulled or deployed.
#   - GitHub workflows against the workflow JSON schema (vendored in check-jsonschema);
#   - Kubernetes manifests against the API schemas (kubernetes-validate, strict), and the
#     cert-manager ClusterIssuer, which those schemas do not cover, against eks/schemas/;
#   - the Dockerfile with hadolint; docker-compose.yml with `docker compose config` (v2) or
#     Debian's docker-compose (v1);
#   - every YAML file with yamllint;
#   - the compose profile's HAProxy configuration with `haproxy -c` (its replicas' names only
#     resolve inside Docker: the warnings about them are expected).
# Tools: pinned PyPI packages in .venv/ (scripts/requirements-validate.txt); Debian's
# docker-compose and haproxy, installed if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/venv.sh scripts/requirements-validate.txt >/dev/null
bin=.venv/bin
step() { printf '== %s\n' "$*"; }

step "yamllint"
"$bin/yamllint" --strict -c .yamllint.yml .github/workflows docker-compose.yml eks .yamllint.yml

step "GitHub workflows (workflow schema)"
"$bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml

step "Kubernetes manifests (strict)"
"$bin/kubernetes-validate" --strict --quiet eks/*.yaml
"$bin/check-jsonschema" --schemafile eks/schemas/cert-manager-clusterissuer.json eks/issuer.yaml

step "Dockerfile (hadolint)"
"$bin/hadolint" Dockerfile

step "docker-compose.yml"
if docker compose version >/dev/null 2>&1; then
  # Compose v2, where Docker is installed (GitHub's runners).
  docker compose -f docker-compose.yml config --quiet
else
  if ! command -v docker-compose >/dev/null 2>&1; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq docker-compose >/dev/null
  fi
  docker-compose -f docker-compose.yml config --quiet
fi

step "deploy/compose-haproxy.cfg (haproxy -c)"
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || scripts/apt.sh haproxy
if ! checked="$(PATH="$PATH:/usr/sbin" haproxy -c -f deploy/compose-haproxy.cfg 2>&1)"; then
  printf '%s\n' "$checked" >&2
  exit 1
fi
printf '%s\n' "$checked" | grep -v "could not resolve address" >&2 || true

echo "validate: all deployment files pass"
