#!/usr/bin/env bash
# CI: the deployment artefacts. Idempotent; installs what it needs.
#
#   .ci/deploy-checks.sh            prepare, then run the deployment tests:
#                                   helm lint / template / Kubernetes schemas, Flower,
#                                   metrics, and compose.yaml end to end
#   .ci/deploy-checks.sh --prepare  only prepare (docker-compose, engine, images), so a
#                                   later ./scripts/test runs those tests itself
#
# Prepare = the venv with the dev extras (helm-python-sdk, kubernetes-validate, flower),
# Debian's docker-compose, a Docker engine with the base and sandbox images
# (.ci/docker-setup.sh), the app, PostgreSQL and Redis images (.ci/build-images.sh),
# and `docker-compose config` on compose.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-true}"
step() { printf '\n== deploy: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        echo "deploy-checks: need root to run: $*" >&2; return 1
    fi
}

step "setup (venv and dev extras)"
./scripts/setup

step "docker-compose"
if ! command -v docker-compose >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi
docker-compose version --short

step "images (engine, base, sandbox, app, postgres, redis)"
images="$(bash .ci/build-images.sh)"
echo "${images}"

step "compose.yaml is valid"
env -i PATH="${PATH}" POSTGRES_PASSWORD=check SMITHERS_JWT_SECRET=check SMITHERS_FLOWER_PASSWORD=check DOCKER_GID=0 \
    docker-compose -f compose.yaml config -q

if [ "${1:-}" = "--prepare" ]; then
    exit 0
fi

step "services (PostgreSQL for the metrics tests)"
./scripts/services

step "tests: helm, flower, metrics, compose end to end"
timeout 1800 .venv/bin/python -m pytest -q -p no:cacheprovider --durations=5 \
    tests/integration/test_helm.py \
    tests/unit/test_flower.py \
    tests/integration/test_flower.py \
    tests/integration/test_metrics.py \
    tests/integration/test_compose.py
