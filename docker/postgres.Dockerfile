# A stand-in for the postgres:15 image, built from Debian's packages, for machines that
# cannot pull images (CI here). It honours the same variables as the official image:
# POSTGRES_USER, POSTGRES_PASSWORD(_FILE), POSTGRES_DB, PGDATA.
#
#   docker build -f docker/postgres.Dockerfile -t smithers-postgres:15 docker
ARG BASE_IMAGE=smithers-base:bookworm
FROM ${BASE_IMAGE}
RUN set -eu; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /var/lib/postgresql/data /var/run/postgresql; \
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql; \
    chmod 0700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:${PATH} PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint"]
