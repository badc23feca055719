# The preparation driver: one Python process, one Django start, the requested management
# commands. bitpoll-launcher runs it as the service user with the app's environment and
# reads its output; it is not meant to be run by hand.
#
# Arguments: one per lane, the lane's steps separated by commas ("migrate
# collectstatic,compilemessages"); with --force-migrate first, migrate runs as a command
# even when there is nothing to apply. The steps of a lane run in order; lanes run side by
# side (launcher_plan::protocol::lanes decides which: collectstatic and compilemessages
# never touch the database, so they need not wait for migrate).
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
#   lane-end <lane> exit <code> | signal <n> | stopped
# The launcher accepts event lines up to 1 MiB. A failing step prints its traceback to
# stderr and the driver exits with status 3.
#
# With one lane the driver runs its steps itself. With more, after Django started it
# forks one process per lane (the imported app is shared, nothing is started twice), and
# only waits: lane 0 reports on the driver's fd 3, 1 and 2, lane k on fds 3k+1 (events),
# 3k+2 (stdout) and 3k+3 (stderr), which it moves to 3, 1 and 2, so each line the launcher
# reads is known to come from its lane. A lane that fails makes the driver stop the others
# (SIGTERM: an interrupted step reports no step-done, so it gets no stamp); when every
# lane is gone the driver sends one lane-end per lane on fd 3 and exits with status 3 if
# one failed. A lane dies with the driver (PR_SET_PDEATHSIG), as the driver dies with the
# launcher.
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
# SQLite database is backed up there before migrate. With BITPOLL_LAUNCHER_NEW_DATABASE set
# (the SQLite database migrate creates: it does not exist yet), the database is built under
# a temporary name beside it (BITPOLL_DB_PATH points there for this process only), with
# SQLite's journal in memory and no sync after each migration, then synced and moved into
# place in one rename before migrate reports step-done: stopped or crashed on the way, it
# leaves no database, and the next start builds it again. With BITPOLL_LAUNCHER_STATIC set (a
# directory), collectstatic fills a fresh tree below it and then switches the link
# `current`, which the app and the web server use, to it in one rename; stopped before
# that, it leaves `current` on the tree it served.
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
NEW_DATABASE = os.environ.pop("BITPOLL_LAUNCHER_NEW_DATABASE", "")
CURRENT = "current"
# The temporary name of a database being built: "<name>.new-<pid>".
NEW_SUFFIX = ".new-"


class NewDatabase:
    """The SQLite database migrate creates, built under a temporary name and moved into
    place once complete."""

    def __init__(self, path):
        self.path = path
        self.tmp = "%s%s%d" % (path, NEW_SUFFIX, os.getpid())
        self.active = False

    def before_setup(self):
        """Remove what an earlier, interrupted build left, and point the app's settings
        at the temporary name."""
        import re

        directory, name = os.path.split(self.path)
        pattern = re.compile(re.escape(name + NEW_SUFFIX) + r"[0-9]+(-journal|-wal|-shm)?")
        for entry in os.listdir(directory or "."):
            if pattern.fullmatch(entry):
                os.unlink(os.path.join(directory, entry))
        os.environ["BITPOLL_DB_PATH"] = self.tmp

    def after_setup(self):
        """Use the temporary name only if the app's settings took it."""
        from django.db import connections

        name = str(connections["default"].settings_dict.get("NAME", ""))
        self.active = os.path.abspath(name) == os.path.abspath(self.tmp)
        if not self.active:
            print("the app's database is %s, not BITPOLL_DB_PATH: migrating it in place" % name)

    def fast(self):
        """No journal on disk and no sync per transaction: the file is not the database
        until it is complete and synced."""
        from django.db import connections

        connection = connections["default"]
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode = MEMORY")
            cursor.execute("PRAGMA synchronous = OFF")

    def finish(self):
        """Sync the complete database and move it into place."""
        from django.db import connections

        connections.close_all()
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)
        directory = os.path.dirname(self.path) or "."
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        print("new database: built as %s, now %s" % (os.path.basename(self.tmp), self.path))

    def discard(self):
        for suffix in ("", "-journal"):
            try:
                os.unlink(self.tmp + suffix)
            except FileNotFoundError:
                pass


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
    return Events(EVENT_FD)


class Events:
    """The event pipe: one line per event, each written with one write(2)."""

    def __init__(self, fd):
        self.fd = fd

    def send(self, *words):
        data = (" ".join(words) + "\n").encode("utf-8")
        while data:
            data = data[os.write(self.fd, data):]


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


def migrate_new_database(new_db):
    """migrate into the database being built, then move it into place."""
    from django.core.management import call_command

    new_db.fast()
    try:
        call_command("migrate", verbosity=1, interactive=False)
        new_db.finish()
    except BaseException:
        new_db.discard()
        raise


def run_lane(steps, events, force_migrate, static_tree, new_db=None):
    """Run `steps` in order in this process, reporting each on `events`."""
    from django.core.management import call_command

    for step in steps:
        events.send("step-begin", step)
        t = time.monotonic()
        if step == "migrate" and new_db is not None and new_db.active:
            migrate_new_database(new_db)
        elif step == "migrate" and not force_migrate and nothing_to_migrate():
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
                events.send("migrations", *names)
        events.send("step-done", step, elapsed_ms(t))
    return 0


def lane_fds(lane):
    """The driver's descriptors for lane `lane` >= 1: events, stdout, stderr
    (launcher_plan::protocol::lane_fds)."""
    return (3 * lane + 1, 3 * lane + 2, 3 * lane + 3)


def c_library():
    """The C library through ctypes, for prctl; None where ctypes is missing."""
    try:
        import ctypes

        return ctypes, ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return None


def die_with_parent(parent, libc):
    """SIGKILL this process when the driver dies, however it dies."""
    if libc is None:
        sys.stderr.write(
            "warning: ctypes is not available: this step is not stopped should the "
            "preparation process be killed\n"
        )
        return
    ctypes, c = libc
    pr_set_pdeathsig, sigkill = 1, 9
    if c.prctl(pr_set_pdeathsig, sigkill, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    # The driver may have died before the prctl: then no signal comes.
    if os.getppid() != parent:
        os._exit(3)


def start_lane(lane, count, steps, events, force_migrate, static_tree, libc, new_db):
    """Fork the process of lane `lane` (of `count`); returns its pid in the driver."""
    driver = os.getpid()
    pid = os.fork()
    if pid != 0:
        return pid
    status = 3
    try:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die_with_parent(driver, libc)
        if lane > 0:
            ev, out, err = lane_fds(lane)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.dup2(ev, EVENT_FD, inheritable=False)
        # Only this lane's pipes stay open here, so each reaches its end with its lane.
        for other in range(1, count):
            for fd in lane_fds(other):
                os.close(fd)
        status = run_lane(steps, events, force_migrate, static_tree, new_db)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


class Stop(BaseException):
    """SIGTERM reached the driver while its lanes run."""


def run_lanes(lanes, events, force_migrate, static_tree, new_db):
    """Run each lane in a process of its own, wait for all of them, stop the others as
    soon as one fails, and report how each ended."""
    import signal

    from django.db import connections

    # Nothing the lanes would share: no database connection is open across the fork.
    connections.close_all()
    libc = c_library()
    sys.stdout.flush()
    sys.stderr.flush()

    def on_sigterm(signum, frame):
        raise Stop()

    # A stop (the launcher signals the whole process group) ends the lanes before the
    # driver: when the launcher has reaped the driver, nothing of the preparation is left.
    signal.signal(signal.SIGTERM, on_sigterm)
    running = {}
    for lane, steps in enumerate(lanes):
        pid = start_lane(
            lane, len(lanes), steps, events, force_migrate, static_tree, libc, new_db
        )
        running[pid] = lane
    for lane in range(1, len(lanes)):
        for fd in lane_fds(lane):
            os.close(fd)
    ends = [None] * len(lanes)
    stopped = set()
    failed = False

    def stop_lanes():
        for other_pid, other in running.items():
            if other not in stopped:
                stopped.add(other)
                os.kill(other_pid, signal.SIGTERM)

    try:
        while running:
            pid, wait_status = os.waitpid(-1, 0)
            lane = running.pop(pid, None)
            if lane is None:
                continue
            if os.WIFEXITED(wait_status):
                ends[lane] = ("exit", str(os.WEXITSTATUS(wait_status)))
            elif lane in stopped:
                ends[lane] = ("stopped",)
            else:
                ends[lane] = ("signal", str(os.WTERMSIG(wait_status)))
            if ends[lane] != ("exit", "0") and lane not in stopped:
                failed = True
                stop_lanes()
    except Stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_lanes()
        for pid in running:
            os.waitpid(pid, 0)
        if new_db is not None:
            new_db.discard()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(128 + signal.SIGTERM)
    for lane, end in enumerate(ends):
        events.send("lane-end", str(lane), *end)
    return 3 if failed else 0


def main(argv):
    force_migrate = "--force-migrate" in argv
    lanes = [word.split(",") for word in argv if word != "--force-migrate"]
    steps = [step for lane in lanes for step in lane]
    unknown = [s for s in steps if s not in COMMANDS]
    if unknown or not lanes or len(set(steps)) != len(steps):
        sys.stderr.write("unknown or repeated preparation step(s): %s\n" % " ".join(argv))
        return 2
    events = open_events()
    if events is None:
        return 2

    t0 = time.monotonic()
    static_tree = None
    if STATIC_DIR and "collectstatic" in steps:
        static_tree = fresh_static_tree(STATIC_DIR)
    new_db = None
    if NEW_DATABASE and "migrate" in steps:
        new_db = NewDatabase(NEW_DATABASE)
        new_db.before_setup()
    import django

    django.setup()
    if new_db is not None:
        new_db.after_setup()
    events.send("setup-done", elapsed_ms(t0))
    if len(lanes) == 1:
        return run_lane(lanes[0], events, force_migrate, static_tree, new_db)
    return run_lanes(lanes, events, force_migrate, static_tree, new_db)


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
