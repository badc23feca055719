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
import os
import sys
import time

EVENT_FD = 3
EVENT_LINE_MAX = 1 << 20
COMMANDS = {
    "migrate": ("migrate", {"interactive": False}),
    "collectstatic": ("collectstatic", {"interactive": False}),
    "compilemessages": ("compilemessages", {}),
}


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
    import django

    django.setup()
    send("setup-done", elapsed_ms(t0))
    from django.core.management import call_command

    for step in steps:
        name, options = COMMANDS[step]
        send("step-begin", step)
        t = time.monotonic()
        if step == "migrate" and not force_migrate and nothing_to_migrate():
            print("No migrations to apply: the database holds every migration on disk.")
        else:
            call_command(name, verbosity=1, **options)
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
