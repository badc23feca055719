#!/usr/bin/env bash
# Try Bitpoll as yourself, without root, systemd or a reverse proxy: the launcher in its
# non-root mode with a throw-away data directory, generated keys and gunicorn on
# 127.0.0.1. `nix run .#bitpoll-server` and `nix run .#bitpoll-manage` run this script
# with the flake's packages; elsewhere point it at a virtualenv and a Bitpoll source:
#
#   export BITPOLL_TRYOUT_PYTHON=/path/to/venv/bin/python    # Django, gunicorn, Bitpoll's deps
#   export BITPOLL_TRYOUT_SOURCE=/path/to/Bitpoll             # holds manage.py
#   scripts/tryout.sh server                  # http://127.0.0.1:8000, Ctrl-C stops it
#   scripts/tryout.sh manage createsuperuser  # manage.py ARGS against the same data
#   scripts/tryout.sh clean                   # remove the try-out directory
#
# The source needs a bitpoll/settings_local.py that reads the BITPOLL_* variables (the
# Nix package ships one: nixos/pkgs/bitpoll/settings_local.py).
#
# Environment:
#   BITPOLL_TRYOUT_PYTHON    the interpreter (required); gunicorn is taken from its directory
#   BITPOLL_TRYOUT_SOURCE    the app source (required)
#   BITPOLL_TRYOUT_LAUNCHER  bitpoll-launcher (default: the one on PATH)
#   BITPOLL_TRYOUT_PREBUILT  1: static files and catalogs are built into the package (the
#                            Nix package): collectstatic and compilemessages are off
#   BITPOLL_TRYOUT_PORT      default 8000
#   BITPOLL_TRYOUT_DIR       default ${TMPDIR:-/tmp}/bitpoll-tryout-$UID: launcher.toml and
#                            data/ (database, generated secrets); delete it to start afresh
#
# Your account runs the app: the config says allow_login_account = true, which a real
# deployment never needs (it gets a system account of its own; see `install`). The
# launcher still refuses an account in a privileged group (wheel, sudo, docker, ...):
# run the try-out as another user then.
set -euo pipefail

die() { printf 'tryout: %s\n' "$*" >&2; exit 2; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
command=$1
shift

[ "$(id -u)" != 0 ] || die "run the try-out as yourself, not as root (for a real deployment as root see: bitpoll-launcher install --help)"

dir=${BITPOLL_TRYOUT_DIR:-${TMPDIR:-/tmp}/bitpoll-tryout-$(id -u)}
case "$dir" in
    /*) ;;
    *) die "BITPOLL_TRYOUT_DIR must be an absolute path, got '$dir'" ;;
esac
config=$dir/launcher.toml
launcher=${BITPOLL_TRYOUT_LAUNCHER:-$(command -v bitpoll-launcher || true)}
[ -n "$launcher" ] || die "bitpoll-launcher is not on PATH; set BITPOLL_TRYOUT_LAUNCHER"

# A directory of its own: made here, or made earlier by the same user and nobody else.
own_dir() {
    if [ ! -e "$dir" ]; then
        (umask 077 && mkdir -p -- "$dir")
    fi
    [ -d "$dir" ] && [ ! -L "$dir" ] && [ -O "$dir" ] ||
        die "$dir exists and is not a directory of yours; remove it or set BITPOLL_TRYOUT_DIR"
    chmod 0700 -- "$dir"
}

# A TOML basic string.
toml_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

write_config() {
    local python=${BITPOLL_TRYOUT_PYTHON:?set BITPOLL_TRYOUT_PYTHON to the interpreter with Django and gunicorn}
    local source=${BITPOLL_TRYOUT_SOURCE:?set BITPOLL_TRYOUT_SOURCE to the directory holding manage.py}
    local port=${BITPOLL_TRYOUT_PORT:-8000}
    local gunicorn
    gunicorn=$(dirname -- "$python")/gunicorn
    [ -x "$python" ] || die "BITPOLL_TRYOUT_PYTHON=$python is not an executable"
    [ -f "$source/manage.py" ] || die "BITPOLL_TRYOUT_SOURCE=$source holds no manage.py"
    [ -x "$gunicorn" ] || die "no gunicorn next to $python"
    case "$port" in
        '' | *[!0-9]*) die "BITPOLL_TRYOUT_PORT must be a number, got '$port'" ;;
    esac
    local built=true
    [ "${BITPOLL_TRYOUT_PREBUILT:-0}" = 1 ] && built=false
    # gunicorn 25.1 and newer opens a control socket unless told not to; older versions
    # do not know the option.
    local control=""
    if "$gunicorn" --help 2>/dev/null | grep -q -- --no-control-socket; then
        control='"--no-control-socket", '
    fi
    local tmp=$config.new
    (umask 077 && cat >"$tmp") <<EOF
# Written by tryout.sh: Bitpoll run by $(id -un) for a try-out.
[service]
user = $(toml_str "$(id -un)")
group = $(toml_str "$(id -gn)")
create_user = false
allow_login_account = true
data_dir = $(toml_str "$dir/data")

[app]
python = $(toml_str "$python")
source_dir = $(toml_str "$source")

[prepare]
migrate = true
collectstatic = $built
compilemessages = $built

[secrets]
BITPOLL_SECRET_KEY = { generate = "django-secret-key" }
BITPOLL_FIELD_ENCRYPTION_KEY = { generate = "fernet-key" }

[environment]
BITPOLL_ALLOWED_HOSTS = "127.0.0.1,localhost"
BITPOLL_BASE_URL = "http://127.0.0.1:$port"

[server]
command = [$(toml_str "$gunicorn"), "--bind", "127.0.0.1:$port", "--workers", "2", ${control}"bitpoll.wsgi:application"]
EOF
    mv -f -- "$tmp" "$config"
}

case "$command" in
    server)
        [ $# -eq 0 ] || die "server takes no arguments"
        own_dir
        write_config
        printf 'tryout: Bitpoll on http://127.0.0.1:%s as %s, data in %s (Ctrl-C stops it)\n' \
            "${BITPOLL_TRYOUT_PORT:-8000}" "$(id -un)" "$dir/data" >&2
        exec "$launcher" run --config "$config"
        ;;
    manage)
        [ $# -ge 1 ] || die "manage needs manage.py arguments, e.g.: manage createsuperuser"
        [ "${1:-}" != -- ] || shift
        [ -f "$config" ] || die "no try-out in $dir yet: start the server once first"
        own_dir
        exec "$launcher" manage --config "$config" -- "$@"
        ;;
    clean)
        if [ -e "$dir" ]; then
            own_dir
            rm -rf -- "$dir"
            printf 'tryout: removed %s\n' "$dir" >&2
        fi
        ;;
    *) usage ;;
esac
