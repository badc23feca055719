#!/usr/bin/env bash
# Run bitpoll-launcher against the bundled demo app (tests/demo-app), as root, the way a
# systemd unit would: it creates the user bitpoll-demo, prepares /var/lib/bitpoll-demo,
# runs migrate/collectstatic/compilemessages as that user (the app copy stays root's and
# read-only) and becomes gunicorn serving
# http://127.0.0.1:8000 (Ctrl-C stops it).
#
#   bash scripts/demo.sh          run the demo (a second run skips the preparation)
#   bash scripts/demo.sh --clean  remove the demo user, group, data and app copy
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
user=bitpoll-demo
base=/opt/bitpoll-launcher-demo
app=$base/app
data=/var/lib/bitpoll-demo
config=$base/launcher.toml

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (the launcher creates a user and drops privileges)" >&2; exit 1; }

if [ "${1:-}" = --clean ]; then
    id -u "$user" >/dev/null 2>&1 && userdel "$user"
    getent group "$user" >/dev/null && groupdel "$user"
    rm -rf "$data" "$app" "$config"
    echo "demo removed (the venv in $base/venv is kept; remove it with rm -rf $base)"
    exit 0
fi

venv=$(bash "$top/tests/setup-venv.sh" | tail -n 1)
cargo build --quiet --manifest-path "$top/Cargo.toml"

# The app copy keeps the checkout's modification times, so an unchanged app is recognised
# as unchanged and the second start skips preparation.
# It belongs to root and the service cannot change it, as an installed app should: the
# launcher compiles the translations into the data directory.
mkdir -p "$app"
cp -a "$top/tests/demo-app/." "$app/"
chmod -R a+rX,go-w "$base"

cat > "$config" <<TOML
[service]
user = "$user"
create_user = true
data_dir = "$data"

[app]
python = "$venv/bin/python"
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

[server]
command = ["$venv/bin/gunicorn", "--bind", "127.0.0.1:8000", "--workers", "2",
           "--no-control-socket", "--preload", "bitpoll.wsgi:application"]
TOML

echo "demo: serving http://127.0.0.1:8000 with config $config (Ctrl-C stops)" >&2
exec "$top/target/debug/bitpoll-launcher" run --config "$config"
