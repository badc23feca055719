#!/usr/bin/env bash
# Build Bitpoll's assets into a tree that is about to become read-only: the translation
# catalogs, the collected static files and the bytecode. The Nix package runs it at build
# time (default.nix), the container image when it is built, and the tests on the real
# Bitpoll (tests/real_bitpoll.rs); a start of the launcher with its output then prepares by
# migrate alone (collectstatic = false, BITPOLL_STATIC_ROOT = OUT).
#
#   build-assets.sh --python PY --source DIR --static OUT
#
#   --python PY    the interpreter of the app's environment (Django, django-pipeline,
#                  libsass, cryptography, ...)
#   --source DIR   the app source (manage.py, bitpoll/, locale/), writable, with a
#                  bitpoll/settings_local.py that reads the BITPOLL_* variables (the one
#                  beside this script)
#   --static OUT   where collectstatic writes: absent or empty, created
#
# What it does, in DIR:
#   1. compilemessages, run from DIR so that only DIR's locale/ folders are searched:
#      a .mo beside every .po (GNU msgfmt --check-format; msgfmt must be on PATH);
#   2. collectstatic into OUT: django-pipeline compiles the SCSS with libsass, writes
#      hashed names and OUT/staticfiles.json, which the app reads at run time;
#   3. compileall of DIR/bitpoll (a read-only tree cannot cache bytecode later;
#      hash-checked .pyc files when SOURCE_DATE_EPOCH is set, as in a Nix build).
#
# The settings need a data directory and keys to import: a temporary directory and keys
# generated here, removed on exit; nothing of them reaches DIR or OUT. The app runs with
# an environment of its own (the caller's BITPOLL_* and DJANGO_* do not leak in). The
# script fails, naming what is missing, when a .po has no .mo afterwards or OUT has no
# staticfiles.json.
set -euo pipefail

usage() {
    echo "usage: build-assets.sh --python PY --source DIR --static OUT" >&2
    exit 2
}
die() {
    echo "build-assets: error: $*" >&2
    exit 1
}

python= source= static=
while [ $# -gt 0 ]; do
    case "$1" in
        --python) [ $# -ge 2 ] || usage; python=$2; shift 2 ;;
        --source) [ $# -ge 2 ] || usage; source=$2; shift 2 ;;
        --static) [ $# -ge 2 ] || usage; static=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "build-assets: unknown argument: $1" >&2; usage ;;
    esac
done
[ -n "$python" ] && [ -n "$source" ] && [ -n "$static" ] || usage
case "$source" in /*) ;; *) source=$(pwd)/$source ;; esac
case "$static" in /*) ;; *) static=$(pwd)/$static ;; esac

[ -x "$python" ] || die "--python $python is not an executable"
[ -f "$source/manage.py" ] || die "--source $source holds no manage.py"
[ -f "$source/bitpoll/settings_local.py" ] \
    || die "$source/bitpoll/settings_local.py is missing (install the packaged settings_local.py first)"
[ -d "$source/locale" ] || die "$source/locale is missing"
command -v msgfmt >/dev/null || die "msgfmt (GNU gettext) is not on PATH"
if [ -e "$static" ] && [ -n "$(ls -A -- "$static")" ]; then
    die "--static $static is not empty; collectstatic writes a fresh tree"
fi
mkdir -p -- "$static"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/bitpoll-build-assets.XXXXXX")
trap 'rm -rf -- "$scratch"' EXIT
mkdir -- "$scratch/data"

# Throw-away keys, valid for the settings' checks only.
keys=$(env -i PATH="$PATH" "$python" -c '
import secrets
from cryptography.fernet import Fernet
print(secrets.token_urlsafe(50))
print(Fernet.generate_key().decode())
') || die "$python cannot generate a Fernet key (is cryptography installed?)"
secret_key=$(printf '%s\n' "$keys" | sed -n 1p)
fernet_key=$(printf '%s\n' "$keys" | sed -n 2p)

# run_app DIR ARGS...: the interpreter in DIR with the app's environment and nothing else.
run_app() {
    local dir=$1
    shift
    (cd "$dir" && env -i \
        PATH="$PATH" \
        HOME="$scratch" \
        PYTHONUTF8=1 \
        PYTHONDONTWRITEBYTECODE=1 \
        PYTHONPATH="$source" \
        DJANGO_SETTINGS_MODULE=bitpoll.settings \
        BITPOLL_DATA_DIR="$scratch/data" \
        BITPOLL_SECRET_KEY="$secret_key" \
        BITPOLL_FIELD_ENCRYPTION_KEY="$fernet_key" \
        BITPOLL_STATIC_ROOT="$static" \
        "$python" "$@")
}

# 1. Catalogs, next to each .po (verbosity 1: a catalog msgfmt rejects is named with
#    msgfmt's message; Django says nothing of it at 0).
run_app "$source" manage.py compilemessages -v 1
po_count=0
while IFS= read -r po; do
    po_count=$((po_count + 1))
    [ -s "${po%.po}.mo" ] || die "compilemessages wrote no ${po%.po}.mo"
done < <(find "$source/locale" -name '*.po')
[ "$po_count" -gt 0 ] || die "no .po file under $source/locale"

# 2. Static files, from outside the source (collectstatic needs no working directory).
run_app "$scratch" "$source/manage.py" collectstatic --noinput -v 0
[ -s "$static/staticfiles.json" ] || die "collectstatic wrote no $static/staticfiles.json"

# 3. Bytecode. With SOURCE_DATE_EPOCH set (Nix, reproducible builds) compileall checks
#    the source by hash, not by modification time, which the Nix store resets to 1.
epoch=()
[ -z "${SOURCE_DATE_EPOCH:-}" ] || epoch=(SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH")
env -i PATH="$PATH" "${epoch[@]}" "$python" -m compileall -q "$source/bitpoll" \
    || die "compileall failed in $source/bitpoll"

echo "build-assets: $po_count catalogs compiled in $source/locale, $(find "$static" -type f | wc -l) static files in $static" >&2
