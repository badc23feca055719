# The preparation driver: one Python process, one Django start, the requested management
# commands in order. bitpoll-launcher runs it as the service user with the app's
# environment and reads its output; it is not meant to be run by hand.
#
# Protocol: besides the commands' own output, the driver writes marker lines to stdout,
# each preceded by a newline so it always starts a line:
#   \x1ebitpoll-launcher setup-done <ms>
#   \x1ebitpoll-launcher step-begin <step>
#   \x1ebitpoll-launcher step-done <step> <ms>
# A failing step prints its traceback to stderr and the driver exits with status 3.
import os
import sys
import time

MARK = "\x1ebitpoll-launcher"
COMMANDS = {
    "migrate": ("migrate", {"interactive": False}),
    "collectstatic": ("collectstatic", {"interactive": False}),
    "compilemessages": ("compilemessages", {}),
}


def mark(*parts):
    sys.stdout.write("\n" + " ".join((MARK,) + parts) + "\n")
    sys.stdout.flush()


def elapsed_ms(since):
    return str(int((time.monotonic() - since) * 1000))


def main(steps):
    unknown = [s for s in steps if s not in COMMANDS]
    if unknown:
        sys.stderr.write("unknown preparation step(s): %s\n" % ", ".join(unknown))
        return 2
    t0 = time.monotonic()
    import django

    django.setup()
    mark("setup-done", elapsed_ms(t0))
    from django.core.management import call_command

    for step in steps:
        name, options = COMMANDS[step]
        mark("step-begin", step)
        t = time.monotonic()
        call_command(name, verbosity=1, **options)
        sys.stdout.flush()
        sys.stderr.flush()
        mark("step-done", step, elapsed_ms(t))
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
