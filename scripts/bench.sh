#!/usr/bin/env bash
# Benchmark bitpoll-launcher against the bundled demo app (tests/demo-app): start-up time
# (cold and warm, up to READY=1), how long after READY=1 the server answers (READY=1 from
# gunicorn's arbiter or its first worker), the one-process preparation against the shell
# preStart it replaces, `check` against one bare Django start, memory, and N = 1, 2, 4
# instances started together on one PostgreSQL database (fresh and warm). Results and their meaning:
# docs/benchmarks.md. Figures are measured here, never asserted in tests (the machine is
# noisy).
#
#   bash scripts/bench.sh              N = 5 runs per timing (about 2 minutes once built)
#   bash scripts/bench.sh --runs 10    more runs
#   BENCH_LOGS=/some/dir bash scripts/bench.sh   keep the launcher logs there
#
# Self-contained: builds the launcher (release), sets up the demo venv
# (tests/setup-venv.sh), creates the throwaway user and group blbench and everything else
# under one directory /var/tmp/blbench.XXXXXX (a PostgreSQL server of its own too, run by
# the `postgres` user of Debian's package, on loopback), and removes all of it at the end,
# also on failure or Ctrl-C. Measurements are done by scripts/bench/harness.py (/usr/bin/python3).
set -euo pipefail

runs=${BENCH_RUNS:-5}
while [ $# -gt 0 ]; do
    case "$1" in
        --runs|-n) runs=$2; shift 2 ;;
        --runs=*) runs=${1#--runs=}; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$runs" in ''|*[!0-9]*|0) echo "bench.sh: --runs needs a positive number" >&2; exit 2 ;; esac

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
user=blbench
harness=$top/scripts/bench/harness.py
# systemd's default PATH for services (the launcher finds useradd/groupadd through PATH).
sys_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the launcher creates a user and drops privileges)"
[ -x /usr/bin/python3 ] || die "/usr/bin/python3 is needed for the harness"
command -v setpriv >/dev/null || die "setpriv (util-linux) is needed"
if [ ! -x /usr/bin/time ]; then
    say "installing GNU time (/usr/bin/time measures exact peak memory)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >&2; } \
        || die "cannot install GNU time"
fi
# Never take over (and later delete) an account that is not ours.
if id -u "$user" >/dev/null 2>&1 || getent group "$user" >/dev/null; then
    die "user or group $user already exists; remove it (userdel $user; groupdel $user) or it is in use"
fi

work=$(mktemp -d /var/tmp/blbench.XXXXXX)
group_created=0
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # The harness stops every process group it starts; this is the safety net for an
    # interrupted run: our private copy of the launcher (still root, before its exec)...
    local p exe
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        [ "$exe" = "$work/bin/bitpoll-launcher" ] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
    # ...and processes of the throwaway user (the Python child, the server).
    if id -u "$user" >/dev/null 2>&1; then
        local pids
        pids=$(pgrep -u "$user" || true)
        if [ -n "$pids" ]; then
            say "stopping leftover processes of $user: $(echo $pids)"
            kill -TERM $pids 2>/dev/null; sleep 1
            pids=$(pgrep -u "$user" || true)
            [ -n "$pids" ] && kill -KILL $pids 2>/dev/null && sleep 0.2
        fi
        userdel "$user" 2>/dev/null || say "warning: userdel $user failed"
    fi
    if [ "$group_created" = 1 ] && getent group "$user" >/dev/null; then
        groupdel "$user" 2>/dev/null || say "warning: groupdel $user failed"
    fi
    if [ -n "${pgbin:-}" ] && [ -f "$work/pg/data/postmaster.pid" ]; then
        runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 \
            || say "warning: cannot stop the benchmark's PostgreSQL server"
    fi
    if [ -n "${BENCH_LOGS:-}" ] && [ -d "$work/logs" ]; then
        mkdir -p "$BENCH_LOGS" && cp -a "$work/logs/." "$BENCH_LOGS/" \
            && cp "$work/results.tsv" "$BENCH_LOGS/results.tsv" && say "logs kept in $BENCH_LOGS"
    fi
    rm -rf -- "$work"
    [ $rc = 0 ] || say "failed (exit $rc); everything created was removed"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

chmod 0755 "$work"   # the service user must traverse it to its data dir and app
mkdir -p "$work/bin" "$work/logs"
app=$work/app
data=$work/data
results=$work/results.tsv
logs=$work/logs
sock=$work/notify.sock
: > "$results"

# --- build and environment -------------------------------------------------------------
say "building the launcher (release)"
cargo build --release --quiet --manifest-path "$top/Cargo.toml"
# A private copy: others rebuilding target/ during the run cannot swap the binary.
launcher=$work/bin/bitpoll-launcher
cp "$top/target/release/bitpoll-launcher" "$launcher"

say "setting up the demo venv"
venv=$(bash "$top/tests/setup-venv.sh" | tail -n 1)
python=$venv/bin/python

mkdir -p "$app"
cp -a "$top/tests/demo-app/." "$app/"
find "$app" -name __pycache__ -prune -exec rm -rf {} +
find "$app" -name '*.mo' -delete
chmod -R a+rX "$app"
groupadd --system "$user"
group_created=1
# compilemessages writes .mo beside .po: the service group may write there (as demo.sh).
chgrp -R "$user" "$app/locale"
chmod -R g+w "$app/locale"

port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

write_config() { # write_config FILE SERVER-ARGV-TOML [EXTRA-ENVIRONMENT-LINES]
    cat > "$1" <<TOML
[service]
user = "$user"
create_user = true
data_dir = "$data"

[app]
python = "$python"
source_dir = "$app"
settings_module = "bitpoll.settings"

[prepare]
migrate = true
collectstatic = true
compilemessages = true

[secrets]
BITPOLL_SECRET_KEY = { generate = "django-secret-key" }
BITPOLL_FIELD_ENCRYPTION_KEY = { generate = "fernet-key" }

[environment]
BITPOLL_ALLOWED_HOSTS = "127.0.0.1,localhost"
BITPOLL_SECURE_COOKIES = "1"
${3:-}

[server]
command = $2
TOML
}
gunicorn="[\"$venv/bin/gunicorn\", \"--bind\", \"127.0.0.1:$port\", \"--workers\", \"2\", \"--no-control-socket\", \"--preload\", \"bitpoll.wsgi:application\"]"
lazy="[\"$venv/bin/gunicorn\", \"--bind\", \"127.0.0.1:$port\", \"--workers\", \"2\", \"--no-control-socket\", \"bitpoll.wsgi:application\"]"
write_config "$work/main.toml" "$gunicorn"
write_config "$work/worker.toml" "$gunicorn
ready = \"worker\""
write_config "$work/lazy.toml" "$lazy"
write_config "$work/lazy-worker.toml" "$lazy
ready = \"worker\""
write_config "$work/env.toml" '["/usr/bin/env"]'
write_config "$work/true.toml" '["/bin/true"]'
write_config "$work/slow.toml" '["/bin/sleep", "30"]' 'DEMO_MIGRATION_DELAY = "3"'

# The harness and everything it starts get a clean environment, like a systemd service.
H() { env -i PATH="$sys_path" LANG=C.UTF-8 /usr/bin/python3 "$harness" "$@"; }
fresh() { rm -rf -- "$data"; find "$app/locale" -name '*.mo' -delete; }

# --- machine and versions --------------------------------------------------------------
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem_total=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
virt=$(systemd-detect-virt 2>/dev/null || echo unknown)
os=$(. /etc/os-release && echo "$PRETTY_NAME")
rev=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$top" diff --quiet HEAD 2>/dev/null || rev="$rev+uncommitted"
pyver=$("$python" -c 'import sys, django, gunicorn; print("Python %s, Django %s, gunicorn %s" % (sys.version.split()[0], django.get_version(), gunicorn.__version__))')
machine="$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs, $cpu, $mem_total RAM, virt $virt; $os, kernel $(uname -r)"
versions="$("$launcher" --version) (git $rev, release build), $(rustc --version | cut -d' ' -f1-2); $pyver; demo app tests/demo-app"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 1 cold start: fresh data dir every run, all three steps run -----------------------
say "1/6 cold start x $runs (+1 warm-up): fresh data dir, launch -> READY=1"
for i in $(seq 0 "$runs"); do
    fresh
    tag=cold; [ "$i" = 0 ] && tag=warmup    # run 0 also creates the user; not counted
    (cd / && H ready --out "$results" --tag "$tag" --sock "$sock" --log "$logs/cold-$i.log" \
        --expect-ran 3 --expect-skipped 0 -- "$launcher" run --config "$work/main.toml")
done

# --- 2 warm start: same data dir, nothing changed --------------------------------------
say "2/6 warm start x $runs: every step skipped, launch -> READY=1"
for i in $(seq 1 "$runs"); do
    (cd / && H ready --out "$results" --tag warm --sock "$sock" --log "$logs/warm-$i.log" \
        --expect-ran 0 --expect-skipped 3 -- "$launcher" run --config "$work/main.toml")
done
say "   and with --force-prepare x $runs: the three steps in one Python process, nothing to do"
for i in $(seq 1 "$runs"); do
    (cd / && H ready --out "$results" --tag forced --sock "$sock" --log "$logs/forced-$i.log" \
        --expect-ran 3 --expect-skipped 0 -- "$launcher" run --force-prepare --config "$work/main.toml")
done

say "   and READY=1 -> first HTTP 200 x $runs each: READY=1 from gunicorn's arbiter or its first worker, with and without --preload"
for i in $(seq 1 "$runs"); do
    for variant in main:ready_arbiter worker:ready_worker lazy:ready_arbiter_lazy lazy-worker:ready_worker_lazy; do
        (cd / && H ready --out "$results" --tag "${variant#*:}" --sock "$sock" --answer "127.0.0.1:$port" \
            --log "$logs/${variant#*:}-$i.log" -- "$launcher" run --config "$work/${variant%%:*}.toml")
    done
done

# --- the app's environment, exactly as the launcher passes it --------------------------
# A run whose server is /usr/bin/env prints the environment the launcher built (the
# preparation gets the same, minus NOTIFY_SOCKET and friends, which are unset here).
(cd / && env -i PATH="$sys_path" LANG=C.UTF-8 "$launcher" run --config "$work/env.toml" \
    > "$work/appenv" 2> "$logs/env.log")
chmod 0600 "$work/appenv"
[ "$(grep -c 'skipped=true' "$logs/env.log")" = 3 ] || die "capturing the environment re-ran preparation steps; see $logs/env.log"
mapfile -t appenv < "$work/appenv"
grep -q '^BITPOLL_SECRET_KEY=' "$work/appenv" || die "no BITPOLL_SECRET_KEY in the captured environment"
# As the service user, with exactly that environment, in the app source (the shell
# preStart's situation: User= in the unit, no PAM).
as_app() { setpriv --reuid="$user" --regid="$user" --init-groups -- env -i "${appenv[@]}" "$@"; }

# --- 4 check and one bare Django start -------------------------------------------------
say "3/6 check x $runs, django.setup() x $runs, python -c pass x $runs"
for i in $(seq 1 "$runs"); do
    (cd "$app" && H wall --out "$results" --tag python_bare --log "$logs/python-$i.log" \
        -- setpriv --reuid="$user" --regid="$user" --init-groups -- env -i "${appenv[@]}" "$python" -c pass)
    (cd "$app" && H wall --out "$results" --tag django_setup --log "$logs/django-$i.log" \
        -- setpriv --reuid="$user" --regid="$user" --init-groups -- env -i "${appenv[@]}" \
        "$python" -c 'import django; django.setup()')
    # Exit status 1 = warnings only (Django's deployment checks on HSTS and SSL redirect,
    # which the demo's settings_local cannot set); errors (2) fail the bench.
    (cd / && H wall --out "$results" --tag check --ok 0,1 --log "$logs/check-$i.log" \
        -- "$launcher" check --config "$work/main.toml")
done
grep -q '^0 error(s)' "$logs/check-1.log" || die "check found errors; see $logs/check-1.log"

# --- 5 memory (warm state) ---------------------------------------------------------------
say "4/6 memory: unit, warm run (server /bin/true), check"
# Exact peaks through /usr/bin/time's ru_maxrss, valid here because no child process is
# involved (`unit` starts none, and a warm `run` skips every step and execs /bin/true,
# which is smaller than the launcher).
(cd / && H maxrss --out "$results" --tag mem_unit --log "$logs/mem-unit.log" \
    -- "$launcher" unit --config "$work/main.toml")
(cd / && H maxrss --out "$results" --tag mem_warm --log "$logs/mem-warm.log" \
    -- "$launcher" run --config "$work/true.toml")
[ "$(grep -c 'skipped=true' "$logs/mem-warm.log")" = 3 ] || die "the warm memory run ran steps; see $logs/mem-warm.log"
(cd / && H mem --out "$results" --tag mem_check --ok 0,1 --log "$logs/mem-check.log" \
    -- "$launcher" check --config "$work/main.toml")

# --- 3 the shell preStart it replaces ------------------------------------------------------
say "5/6 shell preStart (3 x manage.py) x $runs nothing to do, x $runs fresh; memory of a cold run"
shell_prestart='umask 027; python manage.py migrate --noinput && python manage.py collectstatic --noinput && python manage.py compilemessages'
for i in $(seq 1 "$runs"); do
    (cd "$app" && H wall --out "$results" --tag shell_noop --log "$logs/shell-noop-$i.log" \
        -- setpriv --reuid="$user" --regid="$user" --init-groups -- env -i "${appenv[@]}" sh -c "$shell_prestart")
done
grep -q 'No migrations to apply' "$logs/shell-noop-1.log" || die "the shell preStart did not find a migrated database; see $logs/shell-noop-1.log"
for i in $(seq 1 "$runs"); do
    # Fresh: no database, no collected static files, no compiled catalogs.
    rm -f -- "$data"/db.sqlite3 "$data"/db.sqlite3-*
    find "$data/static" -mindepth 1 -delete
    find "$app/locale" -name '*.mo' -delete
    (cd "$app" && H wall --out "$results" --tag shell_fresh --log "$logs/shell-fresh-$i.log" \
        -- setpriv --reuid="$user" --regid="$user" --init-groups -- env -i "${appenv[@]}" sh -c "$shell_prestart")
done
grep -q 'Applying poll.0001_initial' "$logs/shell-fresh-1.log" || die "the fresh shell preStart did not migrate; see $logs/shell-fresh-1.log"

# Cold run with a 3 s migration (DEMO_MIGRATION_DELAY) so that the launcher's memory is
# sampled while it supervises the Python child; the server is /bin/sleep, to see VmHWM
# after exec.
fresh
(cd / && H mem --out "$results" --tag mem_cold --sock "$sock" --linger 0.3 --log "$logs/mem-cold.log" \
    -- "$launcher" run --config "$work/slow.toml")
grep -q 'demo migration: step 3 of 3' "$logs/mem-cold.log" || die "the slow migration did not run; see $logs/mem-cold.log"

# --- 6 instances on one PostgreSQL database ---------------------------------------------
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ] || ! id -u postgres >/dev/null 2>&1; then
    pgbin=
    say "6/6 skipped: no PostgreSQL server here (apt-get install postgresql)"
else
    say "6/6 N = 1, 2, 4 instances on one PostgreSQL database x $runs: fresh, then warm"
    pg=$work/pg
    mkdir -p "$pg" && chmod 0755 "$pg" && chown postgres: "$pg"
    pgport=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    PG() { (cd / && runuser -u postgres -- "$@"); }
    openssl rand -hex 16 > "$pg/superuser" 2>/dev/null || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$pg/superuser"
    chown postgres "$pg/superuser"
    PG "$pgbin/initdb" -D "$pg/data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        --pwfile="$pg/superuser" -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    PG "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w -o "-c listen_addresses=127.0.0.1 -c port=$pgport -c unix_socket_directories=$pg -c max_connections=60" start >/dev/null
    psql_() { PG "$pgbin/psql" -X -q -tA -v ON_ERROR_STOP=1 -h "$pg" -p "$pgport" -U postgres "$@"; }
    keys=$work/keys
    install -d -m 0700 "$keys"
    (umask 077
     head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$keys/db-password"
     head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$keys/secret-key"
     /usr/bin/python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())' > "$keys/fernet-key")
    psql_ -d postgres -c "CREATE ROLE blbench_app LOGIN PASSWORD '$(cat "$keys/db-password")'" \
        -c "CREATE DATABASE blbench OWNER blbench_app"
    pg_config() { # pg_config N: the config of instance N (its data dir and port)
        local iport
        iport=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        cat > "$work/pg-$1.toml" <<TOML
[service]
user = "$user"
data_dir = "$work/pgdata-$1"
[app]
python = "$python"
source_dir = "$app"
[database]
engine = "postgresql"
name = "blbench"
user = "blbench_app"
host = "127.0.0.1"
port = $pgport
sslmode = "disable"
[secrets]
BITPOLL_DB_PASSWORD = { file = "$keys/db-password" }
BITPOLL_SECRET_KEY = { file = "$keys/secret-key" }
BITPOLL_FIELD_ENCRYPTION_KEY = { file = "$keys/fernet-key" }
[environment]
BITPOLL_ALLOWED_HOSTS = "127.0.0.1,localhost"
[server]
command = ["$venv/bin/gunicorn", "--bind", "127.0.0.1:$iport", "--workers", "2", "--no-control-socket", "--preload", "bitpoll.wsgi:application"]
TOML
    }
    for i in 1 2 3 4; do pg_config "$i"; done
    for n in 1 2 4; do
        configs=()
        for i in $(seq 1 "$n"); do configs+=("$work/pg-$i.toml"); done
        for r in $(seq 1 "$runs"); do
            # Fresh: an empty schema and new data directories; exactly one migrates.
            psql_ -d blbench -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION blbench_app" 2>/dev/null
            for i in $(seq 1 "$n"); do rm -rf -- "$work/pgdata-$i"; done
            (cd / && H cluster --out "$results" --tag "pg${n}_fresh" --logs "$logs" --expect-migrated 1 \
                -- "$launcher" "${configs[@]}")
            # Warm: nothing to do anywhere; the locks are taken and released.
            (cd / && H cluster --out "$results" --tag "pg${n}_warm" --logs "$logs" --expect-migrated 0 \
                -- "$launcher" "${configs[@]}")
        done
    done
    [ "$(psql_ -d blbench -c "SELECT count(*) - count(DISTINCT (app, name)) FROM django_migrations")" = 0 ] \
        || die "django_migrations holds duplicates; see $logs"
fi

# --- report ------------------------------------------------------------------------------
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "bitpoll-launcher benchmark, $runs runs per timing (memory: one run each)"
echo "machine:  $machine"
echo "versions: $versions"
echo "load average before/after: $load_before / $load_after"
echo
H report "$results"
