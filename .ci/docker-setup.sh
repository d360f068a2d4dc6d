#!/usr/bin/env bash
# Prepare a real Docker engine and the sandbox image for the integration tests.
#
# Idempotent: every step checks before it acts, so re-running it on a ready machine
# only prints "ok" lines. Works without any container registry: the base image is
# made with debootstrap from Debian's package mirror and imported.
#
#   .ci/docker-setup.sh            # from the repository root
#
# Environment:
#   SMITHERS_BASE_IMAGE      base image tag        (default smithers-base:bookworm)
#   SMITHERS_SANDBOX_IMAGE   sandbox image tag     (default smithers-sandbox:latest)
#   SMITHERS_DEBIAN_SUITE    debootstrap suite     (default bookworm)
#   SMITHERS_DEBIAN_MIRROR   debootstrap mirror    (default: debootstrap's own)
#   DOCKERD_LOG              dockerd log file      (default /var/log/dockerd.log)
#   DOCKERD_WAIT_S           seconds to wait for the engine (default 30)
set -euo pipefail

BASE_IMAGE="${SMITHERS_BASE_IMAGE:-smithers-base:bookworm}"
SANDBOX_IMAGE="${SMITHERS_SANDBOX_IMAGE:-smithers-sandbox:latest}"
SUITE="${SMITHERS_DEBIAN_SUITE:-bookworm}"
MIRROR="${SMITHERS_DEBIAN_MIRROR:-}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKERD_WAIT_S="${DOCKERD_WAIT_S:-30}"
HASH_LABEL="smithers.dockerfile.sha256"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERFILE="${REPO_ROOT}/docker/sandbox.Dockerfile"

log() { printf '[docker-setup] %s\n' "$*"; }
die() { printf '[docker-setup] ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    log "installing with apt: $*"
    as_root apt-get update -qq || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
        || die "apt-get install $* failed"
}

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

# 1. Engine binaries. A docker *client* (e.g. /usr/local/bin/docker) may exist without
#    any engine, so dockerd is what decides whether docker.io is needed.
if engine_up; then
    log "ok: docker engine answers"
else
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        apt_install docker.io
    else
        log "ok: dockerd installed at $(command -v dockerd)"
    fi

    # 2. Start dockerd by hand (no systemd here) and wait, bounded, for it to answer.
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        log "starting dockerd (log: ${DOCKERD_LOG})"
        # setsid: dockerd must outlive this script's process group (CI runners kill it).
        as_root sh -c "setsid nohup dockerd >>'${DOCKERD_LOG}' 2>&1 </dev/null &"
    else
        log "dockerd already running; waiting for it to answer"
    fi
    waited=0
    until engine_up; do
        if [ "${waited}" -ge "${DOCKERD_WAIT_S}" ]; then
            tail -n 20 "${DOCKERD_LOG}" >&2 2>/dev/null || true
            die "docker engine did not answer within ${DOCKERD_WAIT_S}s (see ${DOCKERD_LOG})"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "ok: docker engine answers after ${waited}s"
fi

# 3. Base image, made offline from Debian's mirror (no registry is needed).
if docker image inspect "${BASE_IMAGE}" >/dev/null 2>&1; then
    log "ok: base image ${BASE_IMAGE} present"
else
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    rootfs="$(mktemp -d /tmp/smithers-rootfs.XXXXXX)"
    trap 'as_root rm -rf "${rootfs}"' EXIT
    log "debootstrap --variant=minbase ${SUITE} (about 30 s)"
    # shellcheck disable=SC2086
    as_root timeout 600 debootstrap --variant=minbase "${SUITE}" "${rootfs}" ${MIRROR} \
        >/tmp/smithers-debootstrap.log 2>&1 \
        || { tail -n 20 /tmp/smithers-debootstrap.log >&2; die "debootstrap failed (see /tmp/smithers-debootstrap.log)"; }
    # Package caches and lists only make the image bigger.
    as_root rm -rf "${rootfs}/var/cache/apt/archives/"*.deb "${rootfs}/var/lib/apt/lists/"*
    log "importing ${BASE_IMAGE}"
    as_root tar -C "${rootfs}" -c . | docker import - "${BASE_IMAGE}" >/dev/null \
        || die "docker import of ${BASE_IMAGE} failed"
    as_root rm -rf "${rootfs}"
    trap - EXIT
    log "ok: base image ${BASE_IMAGE} built"
fi

# 4. Sandbox image, rebuilt when the Dockerfile changes (its hash is an image label).
[ -f "${DOCKERFILE}" ] || die "missing ${DOCKERFILE}"
want_hash="$(sha256sum "${DOCKERFILE}" | cut -d' ' -f1)"
have_hash="$(docker image inspect -f "{{ index .Config.Labels \"${HASH_LABEL}\" }}" \
    "${SANDBOX_IMAGE}" 2>/dev/null || true)"
if [ "${have_hash}" = "${want_hash}" ]; then
    log "ok: sandbox image ${SANDBOX_IMAGE} up to date"
else
    if [ -n "${have_hash}" ]; then
        log "Dockerfile changed; rebuilding ${SANDBOX_IMAGE}"
    else
        log "building ${SANDBOX_IMAGE}"
    fi
    # The classic builder needs no buildx plugin and no registry access.
    DOCKER_BUILDKIT=0 timeout 600 docker build --quiet \
        --build-arg "BASE_IMAGE=${BASE_IMAGE}" \
        --label "${HASH_LABEL}=${want_hash}" \
        -f "${DOCKERFILE}" -t "${SANDBOX_IMAGE}" "${REPO_ROOT}/docker" \
        >/tmp/smithers-docker-build.log 2>&1 \
        || { tail -n 20 /tmp/smithers-docker-build.log >&2; die "docker build of ${SANDBOX_IMAGE} failed (see /tmp/smithers-docker-build.log)"; }
    log "ok: sandbox image ${SANDBOX_IMAGE} built"
fi

log "ready: $(docker version -f 'engine {{.Server.Version}}, client {{.Client.Version}}')"
