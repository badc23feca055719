#!/usr/bin/env bash
# The whole test suite: unit tests of every crate, the end-to-end tests of `run` (real
# users, real Django, real gunicorn, real PostgreSQL servers; the demo app and the real
# Bitpoll) and the tests under a real systemd booted in a container. Run as root on a
# Debian-like machine; installs what it needs.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (the tests create users and boot containers)" >&2; exit 1; }

need=()
command -v msgfmt >/dev/null || need+=(gettext)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v setpriv >/dev/null || need+=(util-linux)
command -v nix-instantiate >/dev/null || need+=(nix-bin)
# tests/postgres.rs: Debian's server binaries (each test starts a server of its own) and
# openssl (certificates for the TLS test).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v openssl >/dev/null || need+=(openssl)
# tests/terminal.rs: a real root shell on a terminal (tmux), a delayed system call (strace).
command -v tmux >/dev/null || need+=(tmux)
command -v strace >/dev/null || need+=(strace)
# tests/real_bitpoll.rs: what Bitpoll's pinned requirements build with (python-ldap) and the
# font its stylesheet names (tests/setup-bitpoll.sh).
for pkg in build-essential libldap2-dev libsasl2-dev fonts-noto-color-emoji; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
done
# tests/podman.rs and tests/systemd_trixie.rs: podman with runc and its bridge networks,
# podman-compose, a Debian trixie from mmdebstrap, curl as the browser.
for tool in podman runc podman-compose mmdebstrap iptables curl; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
# tests/guide_debian.rs: the Debian guide's packages and web servers (run in a container);
# iproute2's `ip` links its two containers as two hosts.
command -v ip >/dev/null || need+=(iproute2)
for pkg in nginx caddy git python3-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
done
[ -x /usr/lib/podman/netavark ] || need+=(netavark)
[ -x /usr/lib/podman/aardvark-dns ] || need+=(aardvark-dns)
if [ ${#need[@]} -gt 0 ]; then
    echo "test.sh: installing ${need[*]}" >&2
    if [[ " ${need[*]} " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.d/bitpoll-launcher-tests.conf ]; then
        # Only the binaries: no default cluster created and started by the package.
        mkdir -p /etc/postgresql-common/createcluster.d
        echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/bitpoll-launcher-tests.conf
    fi
    apt-get update -qq
    # Web servers installed for the Debian guide's container must not start on this host.
    no_start=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
        no_start=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${need[@]}" >&2
    [ -z "$no_start" ] || rm -f /usr/sbin/policy-rc.d
fi

bash tests/setup-venv.sh >/dev/null
# The real Bitpoll, when its snapshot is beside the checkout (../shared/upstream, or the
# folder BITPOLL_UPSTREAM_DIR names); without it tests/real_bitpoll.rs skips, and fails
# under CI=true.
if [ -f "${BITPOLL_UPSTREAM_DIR:-$top/../shared/upstream}/bitpoll-35b0236.tar.gz" ]; then
    bash tests/setup-bitpoll.sh >/dev/null
fi

# The unit tests of every crate, then the integration tests (one binary, tests/suite.rs),
# one test at a time. The tests under a real systemd must run here, not skip.
export BITPOLL_REQUIRE_SYSTEMD_TESTS=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --lib --bins --tests --no-fail-fast -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite: a skipped test printed `SKIP module::test: why`.
skipped=$(grep -c 'SKIP [a-z0-9_]*::[a-z0-9_:]*: ' "$log" || true)
awk -v skipped="$skipped" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
     END { printf "suite: %d passed (%d of them skipped), %d failed, %d ignored\n", p, skipped, f, g }' "$log"
# In CI every test runs: a skip is a failure (the tests also fail themselves under CI=true).
if [ "${CI:-}" = true ] && [ "$skipped" -gt 0 ]; then
    echo "test.sh: $skipped test(s) skipped, which CI does not allow:" >&2
    grep -o 'SKIP [a-z0-9_]*::[a-z0-9_:]*: .*' "$log" >&2
    exit 1
fi
exit "$status"
