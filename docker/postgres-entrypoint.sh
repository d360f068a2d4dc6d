#!/bin/sh
# Initialise $PGDATA on first start (user, password, database), then run postgres.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
user="${POSTGRES_USER:-postgres}"
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD="$(cat "${POSTGRES_PASSWORD_FILE}")"
fi
if [ ! -s "${PGDATA}/PG_VERSION" ]; then
    [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "postgres: set POSTGRES_PASSWORD" >&2; exit 1; }
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD}" > "${pwfile}"
    initdb -D "${PGDATA}" -U "${user}" --pwfile="${pwfile}" -E UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "${pwfile}"
    echo "host all all all scram-sha-256" >> "${PGDATA}/pg_hba.conf"
    db="${POSTGRES_DB:-${user}}"
    if [ "${db}" != "postgres" ]; then
        pg_ctl -D "${PGDATA}" -o "-c listen_addresses=''" -w start >/dev/null
        createdb -U "${user}" "${db}"
        pg_ctl -D "${PGDATA}" -m fast -w stop >/dev/null
    fi
    echo "postgres: initialised ${PGDATA} (user ${user}, database ${db})"
fi
exec postgres -D "${PGDATA}" -c listen_addresses='*' "$@"
