#!/usr/bin/env bash
# Benchmark bitpoll-launcher with the bundled demo app (tests/demo-app) and with the real
# Bitpoll (the upstream snapshot tests/setup-bitpoll.sh installs): a cold start (fresh data
# directory) and a warm one, from launch to the first HTTP 200, against the shell preStart
# it replaces (three manage.py commands, then gunicorn), side by side; READY=1 and the
# first answer for each `[server] ready`; `check` against one bare Django start; memory;
# and N = 1, 2, 4 instances on one PostgreSQL database, with their CPU time. Results and
# their meaning: docs/benchmarks.md. Figures are measured here, never asserted in tests.
#
#   bash scripts/bench.sh                  demo app and real Bitpoll, 7 rounds
#   bash scripts/bench.sh --runs 9         more rounds
#   bash scripts/bench.sh --app demo       one app only (demo, real or both)
#   bash scripts/bench.sh --no-cluster     without the PostgreSQL instances
#   BENCH_LOGS=/some/dir bash scripts/bench.sh   keep the launcher logs there
#
# Every round runs each figure once, one after the other (interleaved), so load from
# elsewhere on the machine falls on all of them alike; the report gives the median and
# the minimum of the rounds, and ratios of both. The real Bitpoll needs the snapshot
# ../shared/upstream/bitpoll-35b0236.tar.gz beside the checkout (BITPOLL_UPSTREAM_DIR
# names another folder): without it that part is skipped with a message.
#
# Self-contained: builds the launcher (release), sets up the venvs (tests/setup-venv.sh,
# tests/setup-bitpoll.sh), creates the throwaway user and group blbench and everything
# else under one directory /var/tmp/blbench.XXXXXX (a PostgreSQL server of its own too,
# run by the `postgres` user of Debian's package, on loopback), and removes all of it at
# the end, also on failure or Ctrl-C. Measurements are done by scripts/bench/harness.py
# (/usr/bin/python3).
set -euo pipefail

runs=${BENCH_RUNS:-7}
apps=both
cluster=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs|-n) runs=$2; shift 2 ;;
        --runs=*) runs=${1#--runs=}; shift ;;
        --app) apps=$2; shift 2 ;;
        --app=*) apps=${1#--app=}; shift ;;
        --no-cluster) cluster=0; shift ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$runs" in ''|*[!0-9]*|0) echo "bench.sh: --runs needs a positive number" >&2; exit 2 ;; esac
case "$apps" in demo|real|both) ;; *) echo "bench.sh: --app is demo, real or both" >&2; exit 2 ;; esac

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
    # ...and processes of the throwaway user (the Python children, the servers).
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
    chmod -R u+w -- "$work" 2>/dev/null
    rm -rf -- "$work"
    [ $rc = 0 ] || say "failed (exit $rc); everything created was removed"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

chmod 0755 "$work"   # the service user must traverse it to its data dirs and apps
mkdir -p "$work/bin" "$work/logs"
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

groupadd --system "$user"
group_created=1

free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# The harness and everything it starts get a clean environment, like a systemd service.
H() { (cd / && env -i PATH="$sys_path" LANG=C.UTF-8 /usr/bin/python3 "$harness" "$@"); }
have_perf=0
command -v perf >/dev/null && perf stat -e task-clock -x, -- /bin/true >/dev/null 2>&1 && have_perf=1

demo_ok=0 real_ok=0
if [ "$apps" != real ]; then
    say "setting up the demo venv"
    demo_venv=$(bash "$top/tests/setup-venv.sh" | tail -n 1)
    demo_ok=1
fi
if [ "$apps" != demo ]; then
    say "installing the real Bitpoll (tests/setup-bitpoll.sh)"
    set +e
    real_dir=$(bash "$top/tests/setup-bitpoll.sh" 2> "$logs/setup-bitpoll.log" | tail -n 1)
    rc=$?
    set -e
    if [ $rc = 0 ] && [ -d "$real_dir/src" ]; then
        real_ok=1
    elif [ $rc = 3 ]; then
        say "real Bitpoll skipped: $(tail -n 1 "$logs/setup-bitpoll.log")"
    else
        cat "$logs/setup-bitpoll.log" >&2
        die "tests/setup-bitpoll.sh failed"
    fi
fi
[ $demo_ok = 1 ] || [ $real_ok = 1 ] || die "nothing to measure"

# --- one app: its source, configs, shell preStart and the figures ------------------------
# The seed's shell preStart: three Django starts, one per command.
prestart='umask 027; python manage.py migrate --noinput && python manage.py collectstatic --noinput && python manage.py compilemessages'
# setup_app NAME: variables for app NAME (demo or real) and its configs under $work/NAME.
setup_app() {
    a=$1
    dir=$work/$a
    mkdir -p "$dir"
    chmod 0755 "$dir"
    data=$dir/data
    port=$(free_port)
    if [ "$a" = demo ]; then
        venv=$demo_venv
        src=$dir/src
        cp -a "$top/tests/demo-app/." "$src/"
        find "$src" -name __pycache__ -prune -exec rm -rf {} +
        find "$src" -name '*.mo' -delete
        chmod -R a+rX,go-w "$src"
        path=/                 # the first page a client asks for
        host=127.0.0.1
        extra_env='DEMO_MIGRATION_DELAY = "3"'
    else
        venv=$real_dir/venv
        src=$real_dir/src      # root-owned, read-only: as installed
        path=/
        host=127.0.0.1
        extra_env=
    fi
    python=$venv/bin/python
    # The shell preStart works in a copy of its own: compilemessages writes beside the
    # .po files (the service group may write there, as in the seed's setup).
    shsrc=$dir/shell-src
    cp -a "$src/." "$shsrc/"
    find "$shsrc" -name '*.mo' -delete
    chown -R root:root "$shsrc"
    chmod -R a+rX,go-w "$shsrc"
    chgrp -R "$user" "$shsrc/locale"
    chmod -R g+w "$shsrc/locale"

    write_config() { # write_config FILE DATA-DIR SERVER-LINES [EXTRA-ENVIRONMENT-LINES]
        cat > "$1" <<TOML
[service]
user = "$user"
create_user = true
data_dir = "$2"

[app]
python = "$python"
source_dir = "$src"
settings_module = "bitpoll.settings"

[secrets]
BITPOLL_SECRET_KEY = { generate = "django-secret-key" }
BITPOLL_FIELD_ENCRYPTION_KEY = { generate = "fernet-key" }

[environment]
BITPOLL_ALLOWED_HOSTS = "127.0.0.1,localhost"
BITPOLL_SECURE_COOKIES = "1"
${4:-}

[server]
$3
TOML
    }
    local g="\"$venv/bin/gunicorn\", \"--bind\", \"127.0.0.1:$port\", \"--workers\", \"2\", \"--no-control-socket\""
    gunicorn_argv=("$venv/bin/gunicorn" --bind "127.0.0.1:$port" --workers 2 --no-control-socket --preload bitpoll.wsgi:application)
    write_config "$dir/main.toml" "$data" "command = [$g, \"--preload\", \"bitpoll.wsgi:application\"]"
    write_config "$dir/arbiter.toml" "$data" "command = [$g, \"--preload\", \"bitpoll.wsgi:application\"]
ready = \"arbiter\""
    write_config "$dir/worker.toml" "$data" "command = [$g, \"--preload\", \"bitpoll.wsgi:application\"]
ready = \"worker\""
    write_config "$dir/lazy.toml" "$data" "command = [$g, \"bitpoll.wsgi:application\"]"
    write_config "$dir/lazy-arbiter.toml" "$data" "command = [$g, \"bitpoll.wsgi:application\"]
ready = \"arbiter\""
    write_config "$dir/true.toml" "$data" 'command = ["/bin/true"]'
    write_config "$dir/slow.toml" "$dir/slowdata" 'command = ["/bin/sleep", "30"]' "$extra_env"
    # The app's environment exactly as the launcher builds it, for the shell preStart, in a
    # data directory of the shell's own: a run whose server is /usr/bin/env prints it.
    write_config "$dir/shell-env.toml" "$dir/shell-data" 'command = ["/usr/bin/env"]'
    (cd / && env -i PATH="$sys_path" LANG=C.UTF-8 "$launcher" run --config "$dir/shell-env.toml" \
        > "$dir/appenv" 2> "$logs/$a-env.log") || die "capturing the app environment failed; see $logs/$a-env.log"
    chmod 0600 "$dir/appenv"
    grep -q '^BITPOLL_SECRET_KEY=' "$dir/appenv" || die "no BITPOLL_SECRET_KEY in the captured environment"
    # The shell's app reads its catalogs from its own source only.
    rm -rf -- "$dir/shell-data/locale"
    mapfile -t appenv < "$dir/appenv"
    # The seed's preStart, then gunicorn, as the service user (User= in the unit, no PAM)
    # with exactly the app's environment, in the app source: one script, root's alone
    # (the environment holds the secrets).
    {
        printf '#!/bin/sh\ncd %q || exit 1\n' "$shsrc"
        printf 'exec setpriv --reuid=%s --regid=%s --init-groups -- env -i' "$user" "$user"
        printf ' %q' "${appenv[@]}"
        printf ' /bin/sh -c %q\n' "$prestart && exec $(printf '%q ' "${gunicorn_argv[@]}")"
    } > "$dir/shell.sh"
    chmod 0700 "$dir/shell.sh"
}

fresh() { rm -rf -- "$data"; }
shell_fresh() {
    rm -f -- "$dir/shell-data"/db.sqlite3 "$dir/shell-data"/db.sqlite3-*
    rm -rf -- "$dir/shell-data/static"
    find "$shsrc/locale" -name '*.mo' -delete
}

# round_app NAME ROUND: every timing figure of app NAME once.
round_app() {
    local a=$1 r=$2 t
    local ans=(--answer "127.0.0.1:$port" --answer-path "$path" --answer-host "$host")
    # Cold: a fresh data directory, every step runs; launch -> first HTTP 200 (polled).
    fresh
    H serve --out "$results" --tag "${a}_cold" --sock "$sock" --log "$logs/$a-cold-$r.log" \
        --expect-ran 3 "${ans[@]}" -- "$launcher" run --config "$dir/main.toml"
    # The shell preStart it replaces, from nothing, then gunicorn: launch -> first 200.
    shell_fresh
    H serve --out "$results" --tag "${a}_shell_cold" --log "$logs/$a-shell-cold-$r.log" "${ans[@]}" \
        -- "$dir/shell.sh"
    grep -q 'Applying ' "$logs/$a-shell-cold-$r.log" || die "the fresh shell preStart did not migrate; see $logs/$a-shell-cold-$r.log"
    # Warm: nothing to do. READY=1 once a worker answered (the default), the first 200 after.
    H ready --out "$results" --tag "${a}_warm" --sock "$sock" --log "$logs/$a-warm-$r.log" \
        --expect-ran 0 --expect-skipped 3 --cpu 1 "${ans[@]}" -- "$launcher" run --config "$dir/main.toml"
    for t in arbiter worker lazy lazy-arbiter; do
        H ready --out "$results" --tag "${a}_ready_${t//-/_}" --sock "$sock" --log "$logs/$a-ready-$t-$r.log" \
            --expect-ran 0 --cpu 1 "${ans[@]}" -- "$launcher" run --config "$dir/$t.toml"
    done
    # The shell preStart with nothing to do, then gunicorn.
    H serve --out "$results" --tag "${a}_shell_warm" --log "$logs/$a-shell-warm-$r.log" "${ans[@]}" \
        -- "$dir/shell.sh"
    grep -q 'No migrations to apply' "$logs/$a-shell-warm-$r.log" || die "the shell preStart found work to do; see $logs/$a-shell-warm-$r.log"
    # --force-prepare: the three steps with nothing to do, after one Django start.
    H ready --out "$results" --tag "${a}_forced" --sock "$sock" --log "$logs/$a-forced-$r.log" \
        --expect-ran 3 "${ans[@]}" -- "$launcher" run --force-prepare --config "$dir/main.toml"
    # check (exit status 1: Django's deployment warnings, which the settings cannot switch
    # off; errors, 2, fail the bench), against one bare Django start and a bare interpreter.
    H wall --out "$results" --tag "${a}_check" --ok 0,1 --log "$logs/$a-check-$r.log" \
        -- "$launcher" check --config "$dir/main.toml"
    grep -q '^0 error(s)' "$logs/$a-check-$r.log" || die "check found errors; see $logs/$a-check-$r.log"
    (cd "$src" && H wall --out "$results" --tag "${a}_django_setup" --log "$logs/$a-django-$r.log" \
        -- setpriv --reuid="$user" --regid="$user" --init-groups -- env -i "${appenv[@]}" \
        "$python" -c 'import django; django.setup()')
    (cd "$src" && H wall --out "$results" --tag "${a}_python_bare" --log "$logs/$a-python-$r.log" \
        -- setpriv --reuid="$user" --regid="$user" --init-groups -- env -i "${appenv[@]}" "$python" -c pass)
    # Memory of a warm run that execs /bin/true (exact ru_maxrss: no child, a smaller
    # exec'd program), and its CPU time.
    H maxrss --out "$results" --tag "${a}_mem_warm" --log "$logs/$a-mem-warm-$r.log" \
        -- "$launcher" run --config "$dir/true.toml"
    [ "$(grep -c 'skipped=true' "$logs/$a-mem-warm-$r.log")" = 3 ] || die "the warm memory run ran steps; see $logs/$a-mem-warm-$r.log"
    if [ $have_perf = 1 ]; then
        (cd / && env -i PATH="$sys_path" LANG=C.UTF-8 perf stat -x, -e task-clock \
            -o "$logs/$a-perf-$r.csv" -- "$launcher" run --config "$dir/true.toml" > /dev/null 2>&1)
        awk -F, -v tag="${a}_perf_warm" '$3 == "task-clock" {print tag ".task_clock_ms\t" $1}' \
            "$logs/$a-perf-$r.csv" >> "$results"
    fi
}

# instructions_app NAME: the instructions of a warm run up to its exec, counted by
# callgrind (the same on a busy machine as on an idle one; once per app).
instructions_app() {
    local a=$1
    command -v valgrind >/dev/null || { say "no valgrind: instruction counts skipped"; return 0; }
    install -d -m 1777 "$work/callgrind"   # written after the privilege drop
    (cd / && env -i PATH="$sys_path" LANG=C.UTF-8 valgrind --tool=callgrind --dump-before=execve \
        --callgrind-out-file="$work/callgrind/$a.out" -- "$launcher" run --config "$dir/true.toml" \
        > "$logs/$a-callgrind.log" 2>&1) || die "callgrind run failed; see $logs/$a-callgrind.log"
    awk -v tag="${a}_callgrind_warm" '/^summary:/ {print tag ".instructions_k\t" int($2 / 1000)}' \
        "$work/callgrind/$a.out.1" >> "$results"
    cp "$work/callgrind/$a.out.1" "$logs/$a-callgrind.out"
}

# mem_app NAME: the launcher's own peak while it prepares (a cold start whose server is
# /bin/sleep; the demo's migration takes 3 s) and while `check` waits for its probe.
mem_app() {
    local a=$1
    H maxrss --out "$results" --tag "${a}_mem_unit" --log "$logs/$a-mem-unit.log" \
        -- "$launcher" unit --config "$dir/main.toml"
    rm -rf -- "$dir/slowdata"
    H mem --out "$results" --tag "${a}_mem_cold" --sock "$sock" --linger 0.3 --log "$logs/$a-mem-cold.log" \
        -- "$launcher" run --config "$dir/slow.toml"
    H mem --out "$results" --tag "${a}_mem_check" --ok 0,1 --log "$logs/$a-mem-check.log" \
        -- "$launcher" check --config "$dir/main.toml"
}

# --- machine and versions --------------------------------------------------------------
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem_total=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
virt=$(systemd-detect-virt 2>/dev/null || echo unknown)
os=$(. /etc/os-release && echo "$PRETTY_NAME")
rev=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$top" diff --quiet HEAD 2>/dev/null || rev="$rev+uncommitted"
machine="$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs, $cpu, $mem_total RAM, virt $virt; $os, kernel $(uname -r)"
versions="$("$launcher" --version) (git $rev, release build), $(rustc --version | cut -d' ' -f1-2)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A env_of
app_list=()
[ $demo_ok = 1 ] && app_list+=(demo)
[ $real_ok = 1 ] && app_list+=(real)
for a in "${app_list[@]}"; do
    say "$a: setting up (source, configs, the app's environment)"
    setup_app "$a"
    versions="$versions; $a: $("$python" -c 'import sys, django, gunicorn; print("Python %s, Django %s, gunicorn %s" % (sys.version.split()[0], django.get_version(), gunicorn.__version__))')"
    # Saved per app: the rounds alternate between them.
    env_of[$a]=$(declare -p a dir data port venv src path host python shsrc gunicorn_argv appenv)
    say "$a: one uncounted cold start"
    fresh
    H serve --out "$work/warmup.tsv" --tag warmup --log "$logs/$a-warmup.log" \
        --answer "127.0.0.1:$port" --answer-path "$path" --answer-host "$host" \
        -- "$launcher" run --config "$dir/main.toml"
done

for r in $(seq 1 "$runs"); do
    for a in "${app_list[@]}"; do
        eval "${env_of[$a]}"
        say "round $r/$runs: $a"
        round_app "$a" "$r"
    done
done
for a in "${app_list[@]}"; do
    eval "${env_of[$a]}"
    say "$a: memory of the launcher while it prepares and checks; instructions of a warm run"
    mem_app "$a"
    instructions_app "$a"
done

# --- instances on one PostgreSQL database -------------------------------------------------
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ $cluster = 0 ]; then
    pgbin=
elif [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ] || ! id -u postgres >/dev/null 2>&1; then
    pgbin=
    say "instances on PostgreSQL skipped: no PostgreSQL server here (apt-get install postgresql)"
else
    pg=$work/pg
    mkdir -p "$pg" && chmod 0755 "$pg" && chown postgres: "$pg"
    pgport=$(free_port)
    PG() { (cd / && runuser -u postgres -- "$@"); }
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$pg/superuser"
    chown postgres "$pg/superuser"
    PG "$pgbin/initdb" -D "$pg/data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        --pwfile="$pg/superuser" -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    PG "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w -o "-c listen_addresses=127.0.0.1 -c port=$pgport -c unix_socket_directories=$pg -c max_connections=80" start >/dev/null
    psql_() { PG "$pgbin/psql" -X -q -tA -v ON_ERROR_STOP=1 -h "$pg" -p "$pgport" -U postgres "$@"; }
    keys=$work/keys
    install -d -m 0700 "$keys"
    (umask 077
     head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$keys/db-password"
     head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$keys/secret-key"
     /usr/bin/python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())' > "$keys/fernet-key")
    for a in "${app_list[@]}"; do
        eval "${env_of[$a]}"
        psql_ -d postgres -c "CREATE ROLE blbench_$a LOGIN PASSWORD '$(cat "$keys/db-password")'" \
            -c "CREATE DATABASE blbench_$a OWNER blbench_$a"
        for i in 1 2 3 4; do
            iport=$(free_port)
            cat > "$dir/pg-$i.toml" <<TOML
[service]
user = "$user"
data_dir = "$dir/pgdata-$i"
[app]
python = "$python"
source_dir = "$src"
[database]
engine = "postgresql"
name = "blbench_$a"
user = "blbench_$a"
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
        done
    done
    empty_schema() { psql_ -d "blbench_$1" -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION blbench_$1" 2>/dev/null; }
    for r in $(seq 1 "$runs"); do
        for a in "${app_list[@]}"; do
            eval "${env_of[$a]}"
            say "round $r/$runs: $a, N = 1, 2, 4 instances on one PostgreSQL database"
            for n in 1 2 4; do
                configs=()
                for i in $(seq 1 "$n"); do configs+=("$dir/pg-$i.toml"); done
                # Fresh: an empty schema and new data directories; exactly one migrates,
                # each collects its static files and compiles its catalogs.
                empty_schema "$a"
                for i in $(seq 1 "$n"); do rm -rf -- "$dir/pgdata-$i"; done
                H cluster --out "$results" --tag "${a}_pg${n}_fresh" --logs "$logs" --expect-migrated 1 \
                    -- "$launcher" "${configs[@]}"
                # A new database under prepared instances: the one shared piece of work
                # is the migration; one instance does it, the others wait and skip it.
                empty_schema "$a"
                H cluster --out "$results" --tag "${a}_pg${n}_newdb" --logs "$logs" --expect-migrated 1 \
                    -- "$launcher" "${configs[@]}"
                # Warm: nothing to do anywhere.
                H cluster --out "$results" --tag "${a}_pg${n}_warm" --logs "$logs" --expect-migrated 0 \
                    -- "$launcher" "${configs[@]}"
            done
        done
    done
    for a in "${app_list[@]}"; do
        [ "$(psql_ -d "blbench_$a" -c "SELECT count(*) - count(DISTINCT (app, name)) FROM django_migrations")" = 0 ] \
            || die "django_migrations of $a holds duplicates; see $logs"
    done
fi

# --- report ------------------------------------------------------------------------------
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "bitpoll-launcher benchmark, $runs rounds (each figure once per round, interleaved); memory of a cold run and of check: once"
echo "machine:  $machine"
echo "versions: $versions"
echo "load average before/after: $load_before / $load_after"
echo
H report "$results"
