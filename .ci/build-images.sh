#!/usr/bin/env bash
# Build the images the compose stack runs, locally, one build at a time.
#
# Idempotent: Docker's layer cache makes a rebuild of unchanged sources take seconds.
# No registry is needed: when python:3.11-slim is not already on the engine, the app
# image is built FROM the debootstrapped smithers-base:bookworm (Debian's Python 3.11),
# and PostgreSQL and Redis come from docker/postgres.Dockerfile and docker/redis.Dockerfile
# (Debian packages) instead of postgres:15 and redis:7. The host's CA bundle is handed to
# the build (.build-ca.crt, removed afterwards) for networks that re-sign TLS.
#
# Prints the three image names as shell assignments (for `eval`), e.g.
#   SMITHERS_IMAGE=smithers:local
#
# Environment:
#   SMITHERS_IMAGE             app image tag         (default smithers:local)
#   SMITHERS_POSTGRES_IMAGE    PostgreSQL image tag  (default smithers-postgres:15-local)
#   SMITHERS_REDIS_IMAGE       Redis image tag       (default smithers-redis:7-local)
#   SMITHERS_APP_BASE_IMAGE    app base image        (default python:3.11-slim if present,
#                                                     else smithers-base:bookworm)
#   SMITHERS_BUILD_TIMEOUT_S   per build             (default 900)
set -euo pipefail
cd "$(dirname "$0")/.."

APP_IMAGE="${SMITHERS_IMAGE:-smithers:local}"
PG_IMAGE="${SMITHERS_POSTGRES_IMAGE:-smithers-postgres:15-local}"
REDIS_IMAGE="${SMITHERS_REDIS_IMAGE:-smithers-redis:7-local}"
LOCAL_BASE="${SMITHERS_BASE_IMAGE:-smithers-base:bookworm}"
TIMEOUT_S="${SMITHERS_BUILD_TIMEOUT_S:-900}"
LOG=/tmp/smithers-image-build.log

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { printf '[build-images] ERROR: %s\n' "$*" >&2; exit 1; }

# The engine, the debootstrapped base image and the sandbox image.
bash .ci/docker-setup.sh >&2 || die "no Docker engine (see .ci/docker-setup.sh)"

if [ -n "${SMITHERS_APP_BASE_IMAGE:-}" ]; then
    APP_BASE="${SMITHERS_APP_BASE_IMAGE}"
elif docker image inspect python:3.11-slim >/dev/null 2>&1; then
    APP_BASE=python:3.11-slim
else
    APP_BASE="${LOCAL_BASE}"
fi

build() {  # build TAG DOCKERFILE CONTEXT [ARGS...]
    local tag="$1" file="$2" context="$3"
    shift 3
    # One build at a time on this engine: wait (bounded) for anyone else's build.
    local waited=0
    while pgrep -f '^docker build' >/dev/null 2>&1 && [ "${waited}" -lt "${TIMEOUT_S}" ]; do
        [ "${waited}" = 0 ] && log "waiting for another docker build to finish"
        sleep 2
        waited=$((waited + 2))
    done
    log "building ${tag} (${file})"
    local started=${SECONDS} previous
    previous="$(docker image inspect -f '{{.Id}}' "${tag}" 2>/dev/null || true)"
    # The classic builder needs no buildx plugin and no registry access.
    if ! DOCKER_BUILDKIT=0 timeout "${TIMEOUT_S}" docker build --quiet -f "${file}" -t "${tag}" "$@" \
        "${context}" >"${LOG}" 2>&1; then
        tail -n 30 "${LOG}" >&2
        die "docker build of ${tag} failed (see ${LOG})"
    fi
    # The image this build replaced is left untagged: remove it (unless a container uses it).
    if [ -n "${previous}" ] && [ "${previous}" != "$(docker image inspect -f '{{.Id}}' "${tag}")" ]; then
        docker rmi "${previous}" >/dev/null 2>&1 || true
    fi
    log "ok: ${tag} in $((SECONDS - started))s"
}

ca_copied=0
if [ -f /etc/ssl/certs/ca-certificates.crt ] && [ ! -e .build-ca.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt .build-ca.crt
    ca_copied=1
fi
cleanup() { if [ "${ca_copied}" = 1 ]; then rm -f .build-ca.crt; fi; }
trap cleanup EXIT

build "${APP_IMAGE}" Dockerfile . --build-arg "BASE_IMAGE=${APP_BASE}" \
    --build-arg "DEPLOYMENT_VERSION=${SMITHERS_DEPLOYMENT_VERSION:-ci}"
build "${PG_IMAGE}" docker/postgres.Dockerfile docker --build-arg "BASE_IMAGE=${LOCAL_BASE}"
build "${REDIS_IMAGE}" docker/redis.Dockerfile docker --build-arg "BASE_IMAGE=${LOCAL_BASE}"

printf 'SMITHERS_IMAGE=%s\nSMITHERS_POSTGRES_IMAGE=%s\nSMITHERS_REDIS_IMAGE=%s\n' \
    "${APP_IMAGE}" "${PG_IMAGE}" "${REDIS_IMAGE}"
