#!/usr/bin/env bash
# Create (idempotently) the Python virtualenv that runs tests/demo-app, the small
# Bitpoll-shaped Django app used by the README demo, the test suite and CI.
#
#   tests/setup-venv.sh            -> builds or reuses the venv, prints its path
#   VENV=$(tests/setup-venv.sh)    -> the last (only) line on stdout is the venv path
#
# Environment:
#   BITPOLL_DEMO_VENV    where the venv lives (default /opt/bitpoll-launcher-demo/venv).
#                        It must be readable by unprivileged service users and visible to a
#                        hardened unit, so keep it outside /root (mode 0700) and /tmp
#                        (hidden by PrivateTmp=).
#   BITPOLL_DEMO_PYTHON  interpreter to build from (default /usr/bin/python3, Debian's).
#                        Not the pyenv python3 on PATH: it lives under /root.
#
# The venv is rebuilt from scratch whenever tests/demo-app/requirements.txt changes: a
# stamp file inside the venv holds the sha256 of the requirements it was built from.
# As root, missing Debian packages (python3-venv, gettext for msgfmt) are installed.
# Everything except the final path goes to stderr.
set -euo pipefail

# Keep stdout for the final line only; everything else goes to stderr.
exec 3>&1 1>&2

umask 022

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
requirements="$script_dir/demo-app/requirements.txt"
venv="${BITPOLL_DEMO_VENV:-/opt/bitpoll-launcher-demo/venv}"
python="${BITPOLL_DEMO_PYTHON:-/usr/bin/python3}"
stamp_name=".bitpoll-demo-requirements.sha256"

log() { printf 'setup-venv: %s\n' "$*"; }
die() { printf 'setup-venv: error: %s\n' "$*"; exit 1; }

[[ -f "$requirements" ]] || die "missing $requirements"
[[ -x "$python" ]] || die "interpreter $python not found (set BITPOLL_DEMO_PYTHON)"
case "$venv" in
    /*) ;;
    *) die "BITPOLL_DEMO_VENV must be an absolute path, got '$venv'" ;;
esac
case "$venv" in
    /root|/root/*|/tmp|/tmp/*|/var/tmp|/var/tmp/*)
        log "warning: $venv is under /root or a tmp dir; service users or units with PrivateTmp= may not see it" ;;
esac

is_root() { [[ $(id -u) -eq 0 ]]; }

apt_install() {
    # apt_install PKG...: install Debian packages, refreshing the lists once if needed.
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-y -q -o DPkg::Lock::Timeout=600)
    if ! apt-get install "${opts[@]}" "$@"; then
        log "apt-get install $* failed; running apt-get update and retrying"
        apt-get update -q -o DPkg::Lock::Timeout=600
        apt-get install "${opts[@]}" "$@"
    fi
}

ensure_msgfmt() {
    command -v msgfmt >/dev/null 2>&1 && return 0
    if is_root; then
        log "installing gettext (msgfmt is needed by compilemessages)"
        apt_install gettext
        command -v msgfmt >/dev/null 2>&1 || die "msgfmt still missing after installing gettext"
    else
        die "msgfmt (GNU gettext) is missing and we are not root: apt-get install gettext"
    fi
}

ensure_venv_module() {
    # Debian splits ensurepip out of python3.11 into python3-venv.
    if "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        return 0
    fi
    if is_root; then
        local ver
        ver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        log "installing python3-venv (python$ver has no ensurepip)"
        apt_install python3-venv || apt_install "python$ver-venv"
        "$python" -c 'import ensurepip, venv' >/dev/null 2>&1 \
            || die "$python still has no ensurepip after installing python3-venv"
    else
        die "$python has no ensurepip and we are not root: apt-get install python3-venv"
    fi
}

want_hash=$(sha256sum "$requirements" | cut -d' ' -f1)

venv_is_current() {
    [[ -x "$venv/bin/python" && -f "$venv/$stamp_name" ]] || return 1
    [[ "$(cat "$venv/$stamp_name")" == "$want_hash" ]] || return 1
    # A venv whose base interpreter vanished (or was swapped) must be rebuilt.
    "$venv/bin/python" -c '' >/dev/null 2>&1 || return 1
    grep -qxF "home = $(dirname -- "$python")" "$venv/pyvenv.cfg" 2>/dev/null || return 1
}

ensure_msgfmt

if venv_is_current; then
    log "venv $venv is up to date"
    printf '%s\n' "$venv" >&3
    exit 0
fi

# Serialise concurrent builders (parallel tests, a CI step racing a developer).
parent=$(dirname -- "$venv")
parent_existed=0
[[ -d "$parent" ]] && parent_existed=1
if ! mkdir -p -- "$parent" 2>/dev/null || [[ ! -w "$parent" ]]; then
    die "cannot write to $parent; run as root or set BITPOLL_DEMO_VENV to a writable, world-readable path"
fi
exec 9>"$venv.lock"
if ! flock -w 900 9; then
    die "timed out waiting for the lock $venv.lock"
fi

if venv_is_current; then
    log "venv $venv was built by a concurrent run"
    printf '%s\n' "$venv" >&3
    exit 0
fi

ensure_venv_module

start=$SECONDS
if [[ -e "$venv" ]]; then
    # Never delete something that is not a (possibly half-built) venv of ours.
    if [[ ! -f "$venv/pyvenv.cfg" ]] && [[ -n "$(ls -A -- "$venv" 2>/dev/null)" ]]; then
        die "$venv exists and is not a virtualenv; refusing to delete it"
    fi
    log "rebuilding $venv (requirements changed or venv incomplete)"
    rm -rf -- "$venv"
else
    log "creating $venv from $python"
fi
"$python" -m venv -- "$venv"
"$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
    --prefer-binary --no-cache-dir -r "$requirements"
"$venv/bin/python" -m pip check --disable-pip-version-check
"$venv/bin/python" -c 'import django, gunicorn, encrypted_model_fields, cryptography.fernet' \
    || die "installed venv cannot import the demo app's dependencies"

chmod -R a+rX -- "$venv"
# A parent directory we created must be traversable by service users too.
if [[ $parent_existed -eq 0 ]]; then
    chmod a+rx -- "$parent"
fi
# The stamp goes last: its presence means the venv is complete.
printf '%s\n' "$want_hash" > "$venv/$stamp_name.tmp"
chmod a+r -- "$venv/$stamp_name.tmp"
mv -f -- "$venv/$stamp_name.tmp" "$venv/$stamp_name"
log "venv ready in $((SECONDS - start)) s: $("$venv/bin/python" -m pip freeze --disable-pip-version-check | tr '\n' ' ')"

printf '%s\n' "$venv" >&3
