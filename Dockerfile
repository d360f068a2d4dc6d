# One image for every Smithers process: gateway, scheduler, step worker, sandbox
# worker, Flower and the migration job differ only by their command
# (`smithers gateway`, `smithers scheduler`, `smithers worker --queues sandbox`, ...).
#
#   docker build -t smithers:0.1.0 .                         # FROM python:3.11-slim
#   docker build --build-arg BASE_IMAGE=smithers-base:bookworm -t smithers:ci .
#
# Any Debian-like base works: when it has no Python 3.11+ with venv, Debian's python3
# and python3-venv are installed (bookworm ships 3.11). A build behind a TLS-inspecting
# proxy may put a CA bundle at .build-ca.crt in the repository root (.ci/build-images.sh
# does, and removes it after): pip trusts it during the build only; the image keeps no
# trace of it.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Extras installed into the image: the PostgreSQL driver, the Docker SDK (sandbox
# workers) and Flower.
ARG EXTRAS=postgres,docker,flower
# Recorded on every run this image launches (the audit trail's deployment version).
ARG DEPLOYMENT_VERSION=dev

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    LANG=C.UTF-8

# postgresql-client: `smithers db backup|restore` runs pg_dump / pg_restore.
RUN set -eu; \
    packages="postgresql-client"; \
    if ! python3 -c 'import sys, ensurepip, venv; assert sys.version_info >= (3, 11)' 2>/dev/null; then \
        packages="${packages} python3 python3-venv ca-certificates"; \
    fi; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${packages}; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'; \
    groupadd --system --gid 10001 smithers; \
    useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin smithers

# Dependencies first (their own layer: a source change does not reinstall them).
# (The [t] makes the CA bundle optional: a wildcard may match nothing.)
COPY pyproject.toml README.md .build-ca.cr[t] /src/
RUN set -eu; \
    if [ -f /src/.build-ca.crt ]; then \
        export PIP_CERT=/src/.build-ca.crt REQUESTS_CA_BUNDLE=/src/.build-ca.crt; \
    fi; \
    python3 -m venv /opt/smithers; \
    /opt/smithers/bin/python -c "import sys, tomllib; \
p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = [e for e in sys.argv[1].split(',') if e]; \
print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" \
        "${EXTRAS}" > /src/requirements.txt; \
    /opt/smithers/bin/pip install --quiet --upgrade pip setuptools wheel; \
    /opt/smithers/bin/pip install --quiet -r /src/requirements.txt

COPY smithers /src/smithers
RUN set -eu; \
    /opt/smithers/bin/pip install --quiet --no-deps --no-build-isolation /src; \
    /opt/smithers/bin/pip check; \
    rm -rf /src

# Workflow modules are imported from /app (PYTHONPATH): the examples ship inside the
# package (smithers.examples.*); a deployment adds its own (FROM smithers,
# COPY myflows /app/myflows) and lists them in SMITHERS_WORKFLOWS.
RUN mkdir -p /var/lib/smithers/sandbox && chown -R 10001:10001 /var/lib/smithers

ENV PATH=/opt/smithers/bin:${PATH} \
    PYTHONPATH=/app \
    SMITHERS_DATA_DIR=/var/lib/smithers \
    SMITHERS_SANDBOX_ROOT=/var/lib/smithers/sandbox \
    SMITHERS_DEPLOYMENT_VERSION=${DEPLOYMENT_VERSION}

LABEL org.opencontainers.image.title="smithers" \
      org.opencontainers.image.description="Smithers gateway, scheduler, workers and Flower (choose by command)" \
      org.opencontainers.image.version="${DEPLOYMENT_VERSION}"

WORKDIR /app
USER 10001:10001
EXPOSE 8080 5555 9464
ENTRYPOINT ["smithers"]
CMD ["--help"]
