# NixOS VM test: boots services.bitpoll behind nginx and checks what an admin
# would: the unit comes up (readiness from gunicorn itself) having prepared by
# migrate alone, the front page works through nginx and the static files come
# from the package in the store, a restart keeps the database and the
# generated secrets, the server runs without privileges, `bitpoll-launcher
# check` passes, and both the module's unit and the one `bitpoll-launcher unit`
# prints for other distributions stay within the hardening target.
#
# Run with `nix flake check` or `nix build .#checks.x86_64-linux.vm` (needs KVM).
{ pkgs, self }:

pkgs.testers.runNixOSTest {
  name = "bitpoll";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];

      services.bitpoll = {
        enable = true;
        workers = 2;
        nginx = {
          enable = true;
          hostName = "polls.test";
        };
      };

      networking.hosts."127.0.0.1" = [ "polls.test" ];

      environment.systemPackages = [
        pkgs.curl
        pkgs.sqlite
      ];

      virtualisation.memorySize = 2048;
    };

  testScript = ''
    import re
    import shlex

    DATA = "/var/lib/bitpoll"
    CONFIG = "/etc/bitpoll/launcher.toml"
    URL = "http://polls.test"

    def sql(query):
        return machine.succeed(
            f"sqlite3 -readonly {DATA}/db.sqlite3 {shlex.quote(query)}"
        ).strip()

    def secrets_digest():
        return machine.succeed(
            f"cd {DATA}/secrets && find . -type f -print0 | sort -z | xargs -0 -r sha256sum"
        ).strip()

    machine.wait_for_unit("bitpoll.service")
    machine.wait_for_unit("nginx.service")
    machine.wait_for_open_port(3008, addr="127.0.0.1")
    machine.wait_for_open_port(80, addr="127.0.0.1")

    with subtest("unit is active and gunicorn holds the main PID"):
        machine.succeed("systemctl is-active bitpoll.service")
        pid = machine.succeed("systemctl show -P MainPID bitpoll.service").strip()
        assert pid not in ("", "0"), f"no main PID: {pid!r}"
        cmdline = machine.succeed(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
        assert "gunicorn" in cmdline, cmdline

    with subtest("server runs as the service user with no capabilities"):
        pid = machine.succeed("systemctl show -P MainPID bitpoll.service").strip()
        user = machine.succeed(f"ps -o user= -p {pid}").strip()
        assert user == "bitpoll", f"main process runs as {user!r}"
        fields: dict[str, str] = {}
        for line in machine.succeed(f"cat /proc/{pid}/status").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value.strip()
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(fields[cap], 16) == 0, f"{cap} = {fields[cap]}"
        assert fields["NoNewPrivs"] == "1", "no_new_privs is not set"
        for uid in fields["Uid"].split():
            assert uid != "0", f"a uid is still root: {fields['Uid']}"

    with subtest("data directory layout"):
        machine.succeed(f"test \"$(stat -c '%a %U:%G' {DATA})\" = '750 bitpoll:bitpoll'")
        machine.succeed(f"test \"$(stat -c '%a %U:%G' {DATA}/secrets)\" = '700 bitpoll:bitpoll'")
        machine.succeed(f"test \"$(stat -c '%U' {DATA}/db.sqlite3)\" = bitpoll")

    with subtest("front page through nginx"):
        machine.wait_until_succeeds(f"curl -fsS -o /dev/null {URL}/", timeout=120)
        code = machine.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {URL}/")
        assert code == "200", f"front page answered {code}"

    with subtest("static files served by nginx from the package, none collected at start"):
        page = machine.succeed(f"curl -fsS {URL}/")
        links = re.findall(r'/static/[^"\'\s>]+\.css', page)
        assert links, "the front page links no stylesheet under /static/"
        machine.succeed(f"curl -fsS -o /dev/null {URL}{links[0]}")
        machine.succeed(f"test -z \"$(find {DATA} -name staticfiles.json)\"")
        # nginx reads the store, not the data directory.
        machine.fail("id -nG nginx | grep -qw bitpoll")
        log = machine.succeed("journalctl -u bitpoll.service -o cat")
        assert "step migrate started" in log, log
        assert "step collectstatic started" not in log, log
        assert "step compilemessages started" not in log, log
        # The journal catalog of the launcher is in journalctl's database.
        machine.wait_for_unit("bitpoll-journal-catalog.service")
        catalog = machine.succeed("journalctl --list-catalog")
        assert "bitpoll-launcher: The data directory belongs to another user" in catalog, catalog

    with subtest("admin runs manage.py through the launcher"):
        machine.succeed(
            f"bitpoll-launcher manage --config {CONFIG} -- "
            "createsuperuser --noinput --username vmtest --email vmtest@polls.test"
        )
        assert sql("select count(*) from base_bitpolluser where username = 'vmtest'") == "1"
        # Whatever the admin ran must not leave root-owned files behind.
        machine.succeed(f"test -z \"$(find {DATA} -user root)\"")

    with subtest("restart keeps the database and the generated secrets"):
        secrets_before = secrets_digest()
        assert secrets_before, f"no generated secret under {DATA}/secrets"
        machine.succeed(f"test -z \"$(find {DATA}/secrets -type f ! -perm 0600)\"")
        inode_before = machine.succeed(f"stat -c %i {DATA}/db.sqlite3").strip()
        migrations_before = sql("select count(*) from django_migrations")

        machine.succeed("systemctl restart bitpoll.service")
        machine.wait_for_unit("bitpoll.service")
        machine.wait_until_succeeds(f"curl -fsS -o /dev/null {URL}/", timeout=120)

        assert secrets_digest() == secrets_before, "a generated secret changed on restart"
        assert machine.succeed(f"stat -c %i {DATA}/db.sqlite3").strip() == inode_before
        assert sql("select count(*) from django_migrations") == migrations_before
        assert sql("select count(*) from base_bitpolluser where username = 'vmtest'") == "1"
        machine.succeed(f"test -z \"$(find {DATA} -user root)\"")

    with subtest("bitpoll-launcher check as an admin"):
        rc, out = machine.execute(f"bitpoll-launcher check --config {CONFIG} 2>&1")
        print(out)
        assert rc in (0, 1), f"check exited {rc} (2 means errors)"

    with subtest("the module's unit meets the hardening target"):
        print(machine.succeed("systemd-analyze security --no-pager bitpoll.service"))
        machine.succeed("systemd-analyze security --threshold=20 bitpoll.service")

    with subtest("the unit printed for other distributions verifies and meets the target"):
        machine.succeed("mkdir -p /root/unit")
        machine.succeed(f"bitpoll-launcher unit --config {CONFIG} > /root/unit/bitpoll.service")
        print(machine.succeed("cat /root/unit/bitpoll.service"))
        machine.succeed("systemd-analyze verify /root/unit/bitpoll.service")
        machine.succeed(
            "systemd-analyze security --offline=true --threshold=20 /root/unit/bitpoll.service"
        )
        machine.succeed(f"bitpoll-launcher sysusers --config {CONFIG} | grep -w bitpoll")
  '';
}
