#!/usr/bin/env bash
# Install (idempotently) the real Bitpoll for the tests of tests/real_bitpoll.rs: the
# upstream source at the pinned commit, root-owned and read-only, and a virtualenv with
# its pinned requirements.
#
#   tests/setup-bitpoll.sh             -> builds or reuses the install, prints its path
#   DIR=$(tests/setup-bitpoll.sh)      -> the last (only) line on stdout is the directory
#                                         holding src/ (manage.py) and venv/
#
# The source comes from the snapshot beside the checkout,
# ../shared/upstream/bitpoll-35b0236.tar.gz (its sha256 is checked), never from the
# network; without it the script fails saying so (exit status 3). Into the unpacked tree
# go a TrueType font at bitpoll/base/static/fonts/NotoColorEmoji.ttf (the snapshot lacks
# upstream's; Debian's fonts-noto-color-emoji stands in) and the Nix package's
# settings_local.py (nixos/pkgs/bitpoll/settings_local.py), which reads the BITPOLL_*
# variables the launcher sets.
#
# The source gets its bytecode, then is made read-only for everyone (root-owned, no write
# bits); its catalogs are not compiled and its static files not collected.
#
# The venv is made from /usr/bin/python3 (Debian 12's 3.11) with the snapshot's
# requirements-production.txt, changed in three ways (the list is derived here at every
# run, from the file in the tarball):
#   - Django 5.2.x instead of 6.0.x, which needs Python 3.12 or newer;
#   - without uwsgi (gunicorn serves);
#   - plus gunicorn and psycopg (PostgreSQL through psycopg 3, which Django prefers).
# urllib3-future is built from its sdist with URLLIB3_NO_OVERRIDE=1, or it would replace
# urllib3 in the venv.
#
# Environment:
#   BITPOLL_UPSTREAM_ROOT     where installs live (default /opt/bitpoll-launcher-upstream).
#                             World-readable, outside /root (0700) and /tmp (hidden by
#                             PrivateTmp=), so service users and hardened units reach it.
#   BITPOLL_UPSTREAM_DIR      the folder holding the snapshot (default: ../shared/upstream
#                             beside the checkout; a git worktree elsewhere names it here)
#   BITPOLL_UPSTREAM_PYTHON   interpreter to build the venv from (default /usr/bin/python3)
#
# Each install is a directory named by a key: the sha256 of every input (the tarball's
# digest, settings_local.py, the font, the derived requirement list, the interpreter and
# its version, and the layout version below). A changed input makes a new directory;
# directories no run has used for a week are removed. A file `complete` in the directory,
# written last, says it is whole. Concurrent runs are serialised by an flock.
# As root, missing Debian packages (build tools, LDAP and SASL headers, gettext, the
# font, python3-venv) are installed. Everything except the final path goes to stderr.
set -euo pipefail

exec 3>&1 1>&2
umask 022

# Bump when the layout or the way the install is made changes.
layout=2
tarball_name=bitpoll-35b0236.tar.gz
tarball_sha256=54120ba1996873e1ab523ae876c16638da7c859862d79a70d2473cb5cb36f53e
django_pin='django==5.2.20'
extra_pins=('gunicorn==27.0.1' 'psycopg[binary]==3.3.9')
font_rel=bitpoll/base/static/fonts/NotoColorEmoji.ttf
debian_font=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
top=$(cd -- "$script_dir/.." && pwd -P)
tarball="${BITPOLL_UPSTREAM_DIR:-$top/../shared/upstream}/$tarball_name"
root="${BITPOLL_UPSTREAM_ROOT:-/opt/bitpoll-launcher-upstream}"
python="${BITPOLL_UPSTREAM_PYTHON:-/usr/bin/python3}"
settings_local="$top/nixos/pkgs/bitpoll/settings_local.py"

log() { printf 'setup-bitpoll: %s\n' "$*"; }
die() { printf 'setup-bitpoll: error: %s\n' "$*"; exit 1; }

if [[ ! -f "$tarball" ]]; then
    printf 'setup-bitpoll: the upstream snapshot %s is absent\n' "$tarball"
    exit 3
fi
[[ $(id -u) -eq 0 ]] || die "run as root: the install is root-owned"
[[ -x "$python" ]] || die "interpreter $python not found (set BITPOLL_UPSTREAM_PYTHON)"
[[ -f "$settings_local" ]] || die "missing $settings_local"
case "$root" in
    /root|/root/*|/tmp|/tmp/*|/var/tmp|/var/tmp/*)
        die "BITPOLL_UPSTREAM_ROOT=$root is under /root or a tmp dir; service users or units with PrivateTmp= would not see it" ;;
    /*) ;;
    *) die "BITPOLL_UPSTREAM_ROOT must be an absolute path, got '$root'" ;;
esac

# --- Debian packages ---------------------------------------------------------------

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
for pkg in build-essential libldap2-dev libsasl2-dev gettext fonts-noto-color-emoji; do
    have_pkg "$pkg" || need+=("$pkg")
done
"$python" -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [[ ${#need[@]} -gt 0 ]]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    opts=(-y -q -o DPkg::Lock::Timeout=600)
    if ! apt-get install "${opts[@]}" "${need[@]}"; then
        apt-get update -q -o DPkg::Lock::Timeout=600
        apt-get install "${opts[@]}" "${need[@]}"
    fi
fi
[[ -s "$debian_font" ]] || die "$debian_font is missing after installing fonts-noto-color-emoji"

# --- The inputs and the key --------------------------------------------------------

got_sha=$(sha256sum "$tarball" | cut -d' ' -f1)
[[ "$got_sha" == "$tarball_sha256" ]] \
    || die "$tarball has sha256 $got_sha, expected $tarball_sha256 (the snapshot of commit 35b0236)"

# requirements-production.txt as pip-compile wrote it, reduced to the pins, changed as
# the header says. Each change must find what it changes, or the snapshot is not the one
# this was written for.
derive_requirements() {
    tar -xzOf "$tarball" ./requirements-production.txt | awk -v django="$django_pin" '
        { sub(/#.*/, ""); gsub(/[ \t\r]+/, "") }
        $0 == "" { next }
        tolower($0) ~ /^django==6\.0\./ { print django; django_seen++; next }
        tolower($0) ~ /^uwsgi==/ { uwsgi_seen++; next }
        { print }
        END {
            if (django_seen != 1) { print "no django==6.0.x pin" > "/dev/stderr"; exit 1 }
            if (uwsgi_seen != 1) { print "no uwsgi pin" > "/dev/stderr"; exit 1 }
        }'
    printf '%s\n' "${extra_pins[@]}"
}
requirements=$(derive_requirements) || die "cannot derive the requirement list from $tarball"

py_version=$("$python" -c 'import sys; print(sys.version)')
key=$(
    {
        printf 'layout %s\ntarball %s\npython %s %s\n' "$layout" "$tarball_sha256" "$python" "$py_version"
        printf 'settings_local %s\n' "$(sha256sum "$settings_local" | cut -d' ' -f1)"
        printf 'font %s\n' "$(sha256sum "$debian_font" | cut -d' ' -f1)"
        printf '%s\n' "$requirements"
    } | sha256sum | cut -c1-16
)
dir="$root/$key"

is_complete() { [[ -f "$dir/complete" && -x "$dir/venv/bin/python" && -f "$dir/src/manage.py" ]]; }

finish() {
    # The stamp's time says when the install was last used (kept to the day, so that a
    # run writes nothing while a test container may have / as its lower layer); unused
    # ones go after a week.
    [[ -z "$(find "$dir/complete" -mmin +1440 2>/dev/null)" ]] || touch "$dir/complete"
    find "$root" -mindepth 2 -maxdepth 2 -name complete -mtime +7 -printf '%h\n' |
        while read -r old; do
            [[ "$old" != "$dir" ]] || continue
            log "removing $old (unused for a week)"
            chmod -R u+w -- "$old" && rm -rf -- "$old"
        done
    printf '%s\n' "$dir" >&3
    exit 0
}

if is_complete; then
    log "$dir is up to date"
    finish
fi

mkdir -p -- "$root"
chmod 0755 -- "$root"
exec 9>"$root/.lock"
flock -w 900 9 || die "timed out waiting for the lock $root/.lock"
if is_complete; then
    log "$dir was made by a concurrent run"
    finish
fi

start=$SECONDS
if [[ -e "$dir" ]]; then
    log "removing the incomplete $dir"
    chmod -R u+w -- "$dir"
    rm -rf -- "$dir"
fi
mkdir -p -- "$dir"

# --- The source: root-owned, read-only ---------------------------------------------

src="$dir/src"
mkdir -- "$src"
tar -xzf "$tarball" -C "$src" --no-same-owner --no-same-permissions
[[ -f "$src/manage.py" ]] || die "$tarball holds no manage.py at its top"
if [[ ! -s "$src/$font_rel" ]]; then
    install -m 0644 -- "$debian_font" "$src/$font_rel"
fi
install -m 0644 -- "$settings_local" "$src/bitpoll/settings_local.py"
printf '%s\n' "$requirements" > "$dir/requirements.txt"

# --- The venv ----------------------------------------------------------------------

venv="$dir/venv"
log "creating $venv from $python"
"$python" -m venv -- "$venv"
URLLIB3_NO_OVERRIDE=1 "$venv/bin/python" -m pip install --quiet --no-input \
    --disable-pip-version-check --no-binary urllib3-future -r "$dir/requirements.txt"
"$venv/bin/python" -m pip check --disable-pip-version-check
# urllib3-future must sit beside urllib3, not in its place.
"$venv/bin/python" - <<'EOF' || die "the venv's urllib3 is not urllib3 (urllib3-future replaced it)"
import importlib.metadata as md, urllib3
assert md.version("urllib3") == urllib3.__version__, (md.version("urllib3"), urllib3.__version__)
EOF
"$venv/bin/python" -c 'import django, gunicorn, psycopg, ldap, sass, pipeline, encrypted_model_fields' \
    || die "the venv cannot import Bitpoll's dependencies"
"$venv/bin/python" -m compileall -q "$venv/lib" >/dev/null || true
chmod -R a+rX,go-w -- "$venv"

# Bytecode for the source too, as a package would ship it (the service user cannot write
# there); then nobody may change it. The catalogs stay uncompiled and the static files
# uncollected: that is the launcher's work (or build-assets.sh's, on a copy).
"$venv/bin/python" -m compileall -q "$src/bitpoll" >/dev/null
chown -R root:root -- "$src"
chmod -R a+rX,a-w -- "$src"
chmod 0755 -- "$dir"
chmod 0644 -- "$dir/requirements.txt"
log "installed in $((SECONDS - start)) s: $("$venv/bin/python" -m pip freeze --disable-pip-version-check | tr '\n' ' ')"
# Last: the install is whole.
touch "$dir/complete"
finish
