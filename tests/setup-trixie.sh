#!/usr/bin/env bash
# A Debian trixie root file system for the container tests, made with mmdebstrap from the
# Debian mirror (no container registry needed) and cached, so that one test run downloads
# it once and later runs reuse it:
#
#   tests/setup-trixie.sh tarball   -> the path of trixie.tar: minbase with systemd, dbus,
#                                      python3 (3.13), python3-venv, ca-certificates,
#                                      gettext, curl; the base image of tests/podman.rs
#                                      (`podman import`)
#   tests/setup-trixie.sh rootfs    -> the path of a directory unpacked from it, with the
#                                      demo app's venv (tests/demo-app/requirements.txt) at
#                                      /opt/bitpoll-launcher-demo/venv, built with trixie's
#                                      own Python; the root that tests/systemd_trixie.rs boots
#   tests/setup-trixie.sh clean     -> removes the cache
#
# The cache lives in $BITPOLL_TEST_CACHE (default /var/cache/bitpoll-launcher-tests) and is
# rebuilt when the inputs change (package list, mirror, requirements) or after 7 days
# (security updates). The mirror is the first `URIs:` of /etc/apt/sources.list.d/
# debian.sources, or $BITPOLL_DEBIAN_MIRROR. Runs as root (mmdebstrap, chroot); installs
# mmdebstrap when missing. Everything but the final path goes to stderr.
set -euo pipefail
exec 3>&1 1>&2

what=${1:-}
case "$what" in tarball|rootfs|clean) ;; *) echo "usage: setup-trixie.sh tarball|rootfs|clean" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "setup-trixie.sh: run as root" >&2; exit 1; }

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
cache=${BITPOLL_TEST_CACHE:-/var/cache/bitpoll-launcher-tests}
max_age_days=7
packages=systemd,dbus,python3,python3-venv,ca-certificates,gettext,curl
requirements=$script_dir/demo-app/requirements.txt
venv=/opt/bitpoll-launcher-demo/venv

log() { printf 'setup-trixie: %s\n' "$*"; }

if [ "$what" = clean ]; then
    rm -rf -- "$cache"/trixie-*
    exit 0
fi

mirror=${BITPOLL_DEBIAN_MIRROR:-}
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
fi
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p -- "$cache"
exec 9>"$cache/trixie.lock"
flock -w 1800 9 || { log "timed out waiting for $cache/trixie.lock"; exit 1; }

key=$(printf '%s\n' "$packages" "$mirror" | sha256sum | cut -c1-16)
tarball=$cache/trixie-$key.tar

fresh() { [ -e "$1" ] && [ -z "$(find "$1" -maxdepth 0 -mtime +$max_age_days)" ]; }

if ! fresh "$tarball"; then
    command -v mmdebstrap >/dev/null || {
        log "installing mmdebstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 mmdebstrap
    }
    rm -rf -- "$cache"/trixie-*
    log "mmdebstrap trixie from $mirror ($packages)"
    start=$SECONDS
    mmdebstrap --quiet --format=tar --variant=minbase --include="$packages" trixie "$tarball.tmp" "$mirror"
    mv -f -- "$tarball.tmp" "$tarball"
    log "trixie.tar made in $((SECONDS - start)) s"
fi

if [ "$what" = tarball ]; then
    printf '%s\n' "$tarball" >&3
    exit 0
fi

# The root file system with the demo venv, keyed by the tarball and the requirements.
rkey=$(cat <(printf '%s\n' "$tarball") "$requirements" | sha256sum | cut -c1-16)
rootfs=$cache/trixie-$key-rootfs-$rkey
if [ -e "$rootfs/.complete" ]; then
    printf '%s\n' "$rootfs" >&3
    exit 0
fi
rm -rf -- "$cache"/trixie-"$key"-rootfs-*
start=$SECONDS
mkdir -- "$rootfs.tmp"
tar -xf "$tarball" -C "$rootfs.tmp" --numeric-owner --xattrs --xattrs-include='*'
install -D -m 0644 -- "$requirements" "$rootfs.tmp/root/requirements.txt"
# pip inside the chroot: the host's name resolution and CA bundle (a TLS-intercepting proxy
# signs with a CA only the host knows), neither of which stays in the root file system.
ca=/etc/ssl/certs/ca-certificates.crt
unshare --mount --fork -- sh -euc '
    root=$1 venv=$2 ca=$3
    mount --bind /dev "$root/dev"
    mount -t proc proc "$root/proc"
    mount -t tmpfs tmpfs "$root/run"
    touch "$root/run/host-ca.crt" "$root/run/resolv.conf"
    [ -r "$ca" ] && mount --bind "$ca" "$root/run/host-ca.crt"
    cat /etc/resolv.conf > "$root/run/resolv.conf"
    rm -f "$root/etc/resolv.conf"
    ln -s ../run/resolv.conf "$root/etc/resolv.conf"
    cert=
    [ -s "$root/run/host-ca.crt" ] && cert=/run/host-ca.crt
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root ${cert:+PIP_CERT=$cert} \
        sh -euc "python3 -m venv $venv
                 $venv/bin/python -m pip install --quiet --no-input --disable-pip-version-check \
                     --no-cache-dir --prefer-binary -r /root/requirements.txt
                 $venv/bin/python -c \"import django, gunicorn, encrypted_model_fields\"
                 chmod -R a+rX /opt/bitpoll-launcher-demo"
    rm -f "$root/etc/resolv.conf"
' sh "$rootfs.tmp" "$venv" "$ca"
rm -f -- "$rootfs.tmp/root/requirements.txt"
mv -- "$rootfs.tmp" "$rootfs"
touch -- "$rootfs/.complete"
log "root file system with the demo venv made in $((SECONDS - start)) s: $rootfs"
printf '%s\n' "$rootfs" >&3
