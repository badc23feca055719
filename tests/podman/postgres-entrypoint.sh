#!/bin/sh
# PostgreSQL from Debian, started the way the public postgres image starts: on first
# start, a cluster in $PGDATA with the role POSTGRES_USER (password from
# POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD) owning the database POSTGRES_DB, password
# logins over TCP (SCRAM); then the server as PID 1, listening on every address.
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    password=$(cat "$POSTGRES_PASSWORD_FILE")
else
    password=${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE}
fi
install -d -o postgres -g postgres -m 0700 "$PGDATA"
install -d -o postgres -g postgres -m 2775 /var/run/postgresql
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    as_pg "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    # The password reaches psql in its environment, never on a command line.
    INIT_PASSWORD=$password as_pg "$bin/psql" -v ON_ERROR_STOP=1 -q -U postgres -d postgres \
        -v user="$user" -v db="$db" <<'SQL'
\getenv password INIT_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'user') WHERE :'user' <> 'postgres' \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'user', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user') WHERE :'db' <> 'postgres' \gexec
SQL
    as_pg "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres-entrypoint: cluster initialised, role $user owns database $db"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$PGDATA" -c listen_addresses='*'
