#!/bin/sh
# TEST-ONLY: the part of the official postgres entrypoint the BTP stack relies on.
set -eu
if [ "${1:-postgres}" = "postgres" ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}" > /tmp/pwfile
    chown postgres /tmp/pwfile
    runuser -u postgres -- initdb -D "$PGDATA" -U "$user" --pwfile=/tmp/pwfile --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust \
      --auth-host=scram-sha-256 >/dev/null
    rm -f /tmp/pwfile
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    if [ "$db" != "postgres" ]; then
      echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | runuser -u postgres -- postgres --single -D "$PGDATA" postgres >/dev/null
    fi
  fi
  shift || true
  exec runuser -u postgres -- postgres -D "$PGDATA" "$@"
fi
exec "$@"
