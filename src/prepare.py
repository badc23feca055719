# The preparation driver: one Python process, one Django start, the requested management
# commands in order. bitpoll-launcher runs it as the service user with the app's
# environment and reads its output; it is not meant to be run by hand.
#
# Protocol: the driver reports its progress as events on file descriptor 3, the write end
# of a pipe the launcher reads apart from stdout and stderr. stdout and stderr carry the
# commands' own output only, so nothing a command prints can pass for an event; fd 3 is
# close-on-exec here, so no program the commands start (msgfmt, ...) inherits it. One
# event per line, UTF-8, words separated by one space (launcher_plan::protocol parses it):
#   setup-done <ms>                        Django started
#   step-begin <step>
#   migrations [<app_label>.<name> ...]    after migrate succeeded, before its step-done:
#                                          every migration Django finds on disk, sorted
#   step-done <step> <ms>
# The launcher accepts event lines up to 1 MiB. A failing step prints its traceback to
# stderr and the driver exits with status 3.
#
# migrate runs Django's migrate command only when the database lacks a migration Django
# finds on disk (the plan `migrate --check` would report): another instance may have
# applied them while this launcher waited for the migration lock. `--force-migrate`
# (the launcher's --force-prepare) runs the command regardless.
#
# compilemessages never writes into the app source (the service user may not own it): the
# launcher passes BITPOLL_LAUNCHER_CATALOGS, a JSON list of [source base directory,
# target directory] pairs, and each .po below a source base is compiled with GNU msgfmt,
# as Django's compilemessages does, to the same relative path below its target. The app
# finds the targets through BITPOLL_LOCALE_PATHS. With BITPOLL_LAUNCHER_BACKUP set, the
# SQLite database is backed up there before migrate. With BITPOLL_LAUNCHER_STATIC set (a
# directory), collectstatic fills a fresh tree below it and then switches the link
# `current`, which the app and the web server use, to it in one rename.
import os
import sys
import time

EVENT_FD = 3
EVENT_LINE_MAX = 1 << 20
COMMANDS = {
    "migrate": ("migrate", {"interactive": False}),
    "collectstatic": ("collectstatic", {"interactive": False}),
    "compilemessages": None,
}
# For the driver alone: the app's own code does not see them.
CATALOGS = os.environ.pop("BITPOLL_LAUNCHER_CATALOGS", "[]")
BACKUP = os.environ.pop("BITPOLL_LAUNCHER_BACKUP", "")
STATIC_DIR = os.environ.pop("BITPOLL_LAUNCHER_STATIC", "")
CURRENT = "current"


def fresh_static_tree(static_dir):
    """A new, empty tree for collectstatic below `static_dir`; the app's STATIC_ROOT
    points there for this process only. Nothing older is trusted: every file is copied."""
    tree = os.path.join(static_dir, "v-%d" % time.time_ns())
    os.makedirs(tree, mode=0o750)
    os.environ["BITPOLL_STATIC_ROOT"] = tree
    return tree


def switch_static_tree(static_dir, tree):
    """Point `current` at the complete `tree` in one rename, then remove the trees older
    than the one it replaces (kept for a server still reading it)."""
    import re
    import shutil

    link = os.path.join(static_dir, CURRENT)
    try:
        previous = os.readlink(link)
    except OSError:
        previous = None
    tmp = os.path.join(static_dir, ".%s.tmp-%d" % (CURRENT, os.getpid()))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.basename(tree), tmp)
    os.replace(tmp, link)
    print("static files: %s now serves %s" % (link, os.path.basename(tree)))
    keep = {os.path.basename(tree), previous}
    for name in os.listdir(static_dir):
        path = os.path.join(static_dir, name)
        if re.fullmatch(r"v-[0-9]+", name) and name not in keep and not os.path.islink(path):
            shutil.rmtree(path)


def backup_database(target):
    """An online backup of the SQLite database (SQLite's backup API, never a file copy of
    a live database) to `target`, written through a temporary file and renamed. Copied a
    slice at a time, so a stop (SIGTERM from the launcher) is noticed between slices and
    the partial copy removed, with its journal."""
    import signal
    import sqlite3

    from django.db import connections

    class Stopped(Exception):
        pass

    def stop(signum, frame):
        raise Stopped("stopped by signal %d during the backup" % signum)

    name = str(connections["default"].settings_dict["NAME"])
    tmp = "%s.tmp-%d" % (target, os.getpid())
    previous = signal.signal(signal.SIGTERM, stop)
    source = sqlite3.connect("file:%s?mode=ro" % name, uri=True)
    try:
        copy = sqlite3.connect(tmp)
        try:
            with copy:
                # The progress callback is Python code between slices: a pending SIGTERM
                # is acted on there.
                source.backup(copy, pages=1024, progress=lambda status, remaining, total: None)
        finally:
            copy.close()
        os.replace(tmp, target)
    finally:
        source.close()
        for leftover in (tmp, tmp + "-journal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        signal.signal(signal.SIGTERM, previous)
    print("database backed up to %s (%d bytes)" % (target, os.path.getsize(target)))


def compile_catalogs(pairs):
    """Compile every .po below each source base into its target, skipping a .mo that is
    already newer than its .po; each written through a temporary file and renamed."""
    import shutil
    import subprocess

    msgfmt = shutil.which("msgfmt")
    if msgfmt is None:
        raise RuntimeError(
            "msgfmt (GNU gettext) is not on the app's PATH: install gettext, or compile the "
            "catalogs when the app is built and set prepare.compilemessages = false"
        )
    compiled = fresh = 0
    for source, target in pairs:
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.endswith(".po"):
                    continue
                po = os.path.join(dirpath, name)
                mo = os.path.join(target, os.path.relpath(po, source))[:-3] + ".mo"
                try:
                    if os.stat(mo).st_mtime >= os.stat(po).st_mtime:
                        fresh += 1
                        continue
                except FileNotFoundError:
                    pass
                os.makedirs(os.path.dirname(mo), mode=0o750, exist_ok=True)
                tmp = "%s.tmp-%d" % (mo, os.getpid())
                try:
                    subprocess.run([msgfmt, "--check-format", "-o", tmp, po], check=True)
                    os.replace(tmp, mo)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                print("compiled %s -> %s" % (po, mo))
                compiled += 1
    print("%d catalog(s) compiled, %d already up to date" % (compiled, fresh))


def open_events():
    try:
        # Inherited without close-on-exec from the launcher; keep it from our children.
        os.set_inheritable(EVENT_FD, False)
    except OSError:
        sys.stderr.write(
            "no event pipe on fd %d: this driver is run by bitpoll-launcher\n" % EVENT_FD
        )
        return None
    return os.fdopen(EVENT_FD, "w", buffering=1, encoding="utf-8")


def elapsed_ms(since):
    return str(int((time.monotonic() - since) * 1000))


def disk_migrations():
    """Every migration on disk as "app_label.name", sorted; None if one cannot be sent."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    names = sorted("%s.%s" % key for key in loader.disk_migrations)
    if any(not n.isprintable() or " " in n for n in names):
        sys.stderr.write("a migration name is not printable; the migrations are not listed\n")
        return None
    if len(" ".join(["migrations"] + names).encode("utf-8")) >= EVENT_LINE_MAX:
        sys.stderr.write("too many migrations to list (%d)\n" % len(names))
        return None
    return names


def nothing_to_migrate():
    """True when the default database holds every migration on disk (an empty plan)."""
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    executor.loader.check_consistent_history(connection)
    targets = executor.loader.graph.leaf_nodes()
    return not executor.migration_plan(targets)


def main(argv):
    force_migrate = "--force-migrate" in argv
    steps = [a for a in argv if a != "--force-migrate"]
    unknown = [s for s in steps if s not in COMMANDS]
    if unknown:
        sys.stderr.write("unknown preparation step(s): %s\n" % ", ".join(unknown))
        return 2
    events = open_events()
    if events is None:
        return 2

    def send(*words):
        events.write(" ".join(words) + "\n")
        events.flush()

    t0 = time.monotonic()
    static_tree = None
    if STATIC_DIR and "collectstatic" in steps:
        static_tree = fresh_static_tree(STATIC_DIR)
    import django

    django.setup()
    send("setup-done", elapsed_ms(t0))
    from django.core.management import call_command

    for step in steps:
        send("step-begin", step)
        t = time.monotonic()
        if step == "migrate" and not force_migrate and nothing_to_migrate():
            print("No migrations to apply: the database holds every migration on disk.")
        elif step == "compilemessages":
            import json

            compile_catalogs(json.loads(CATALOGS))
        else:
            if step == "migrate" and BACKUP:
                backup_database(BACKUP)
            name, options = COMMANDS[step]
            call_command(name, verbosity=1, **options)
        if step == "collectstatic" and static_tree is not None:
            switch_static_tree(STATIC_DIR, static_tree)
        sys.stdout.flush()
        sys.stderr.flush()
        if step == "migrate":
            names = disk_migrations()
            if names is not None:
                send("migrations", *names)
        send("step-done", step, elapsed_ms(t))
    return 0


if __name__ == "__main__":
    try:
        status = main(sys.argv[1:])
        sys.stdout.flush()
        sys.stderr.flush()
        # Everything is written and every step has reported; skip the interpreter's
        # teardown (tens of milliseconds of a start-up the service waits for).
        os._exit(status)
    except SystemExit:
        raise
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(3)
