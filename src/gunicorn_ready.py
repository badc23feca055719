# Written by bitpoll-launcher for [server] ready = "worker" or "answer"; passed to gunicorn
# with -c. The launcher puts MODE, READY_PATH and ANSWER_TIMEOUT above this text.
#
# gunicorn's arbiter sends READY=1 as soon as its socket listens, before any worker exists,
# so systemd reports the service started while no request can be answered yet. This config
# takes NOTIFY_SOCKET away from gunicorn (its own sd_notify becomes a no-op) and sends
# READY=1 later:
#
# - MODE "worker": from the first worker that has loaded the app and is about to accept
#   connections. The unit needs NotifyAccess=all: the worker is not the main process.
# - MODE "answer": every worker, once it has loaded the app and before it accepts
#   connections, calls the app once itself with GET READY_PATH (a warm-up: the lazy
#   imports, templates and URL patterns of a first request are loaded before a client
#   comes), with a Host from the app's ALLOWED_HOSTS. With --preload the arbiter, which
#   holds the app, does it first, once, before it forks the workers: they inherit what it
#   loaded (database connections and caches it opened are closed, and the garbage
#   collector is kept off the loaded objects, gc.freeze), so their own call is quick. The
#   first worker to get its answer tells the arbiter through a pipe, and the arbiter sends
#   READY=1 with the outcome in STATUS, so NotifyAccess=main suffices. A warm-up that
#   fails (an exception, a status of 400 or more) is logged with its status, and one
#   without an answer within ANSWER_TIMEOUT seconds is given up (in the arbiter, a timer
#   signal ends it; in a worker, it is left running); either way the server goes on and
#   READY=1 is sent: the start does not hang on it.
#
# A shared byte (an anonymous mapping, inherited by every forked worker) records that
# READY=1 was sent, so later workers stay silent.

import mmap
import os
import socket
import sys
import threading
import time

_notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
_sent = mmap.mmap(-1, 1)
# MODE "answer": the pipe from the workers to the arbiter's relay thread.
_relay = {}


def _notify(message, log):
    if not _notify_socket:
        return
    address = _notify_socket
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("bitpoll-launcher ready hook: cannot notify systemd: %s", e)


def when_ready(server):
    """In the arbiter, before it forks a worker (MODE "answer"): with --preload, warm the
    app up here once; then start the relay."""
    if MODE != "answer":
        return
    if server.cfg.preload_app:
        _notify("STATUS=Warming up: gunicorn's arbiter calls GET %s" % READY_PATH, server.log)
        outcome, late = _warm_up_in_arbiter(server)
        _outcome(outcome, late, server.log, os.getpid(), before_fork=True)
    if not _notify_socket:
        return
    read_end, write_end = os.pipe()
    _relay["write"] = write_end
    threading.Thread(
        target=_relay_reports,
        args=(read_end, server.log),
        name="bitpoll-launcher-ready",
        daemon=True,
    ).start()


def _relay_reports(read_end, log):
    """The arbiter's relay: STATUS for each warm-up that begins, READY=1 for the first
    that ends. Reads lines "begin PID PATH" and "end PID TEXT"."""
    pending = b""
    try:
        while True:
            data = os.read(read_end, 4096)
            if not data:
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                kind, _, rest = line.decode("utf-8", "replace").partition(" ")
                if kind == "begin":
                    pid, _, path = rest.partition(" ")
                    _notify("STATUS=Warming up: gunicorn worker %s calls GET %s" % (pid, path), log)
                elif kind == "end":
                    _sent[0] = 1
                    _notify("READY=1\nSTATUS=%s" % rest, log)
                    return
    finally:
        os.close(read_end)


def _report(line, log):
    """A line from a worker to the arbiter's relay (one write, well under PIPE_BUF)."""
    if "write" not in _relay:
        return  # no relay: not started by systemd (no NOTIFY_SOCKET)
    try:
        os.write(_relay["write"], (line.replace("\n", " ")[:1000] + "\n").encode("utf-8"))
    except OSError as e:
        log.warning("bitpoll-launcher ready hook: cannot report to the arbiter: %s", e)


def _host():
    """A Host the app accepts: the first of its ALLOWED_HOSTS that names one host."""
    try:
        from django.conf import settings

        hosts = list(settings.ALLOWED_HOSTS)
    except Exception:
        hosts = []
    for host in hosts:
        host = host.strip()
        if host and host != "*":
            return host.lstrip(".")
    return "localhost"


def _secure():
    """Whether the app expects HTTPS (it would redirect a plain request), and the proxy
    header that says so, if it trusts one."""
    try:
        from django.conf import settings

        return bool(settings.SECURE_SSL_REDIRECT), settings.SECURE_PROXY_SSL_HEADER
    except Exception:
        return False, None


def _call_app(app, path, outcome):
    """GET `path` from the WSGI `app` in this process; the status into `outcome`."""
    import io

    started = time.monotonic()
    try:
        path_info, _, query = path.partition("?")
        https, proxy_header = _secure()
        host = _host()
        environ = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "SERVER_NAME": host.rsplit(":", 1)[0] if not host.endswith("]") else host,
            "SERVER_PORT": "443" if https else "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": host,
            "HTTP_USER_AGENT": "bitpoll-launcher warm-up",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if https else "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        if https and proxy_header:
            environ[proxy_header[0]] = proxy_header[1]
        status = []

        def start_response(line, headers, exc_info=None):
            status[:] = [line]

        body = app(environ, start_response)
        try:
            for _ in body:
                pass
        finally:
            # Closing the response ends the request: Django closes its database
            # connections then.
            if hasattr(body, "close"):
                body.close()
        outcome["status"] = status[0] if status else "no status"
    except Exception as e:
        outcome["error"] = "%s: %s" % (type(e).__name__, e)
    outcome["ms"] = int((time.monotonic() - started) * 1000)


class _Late(BaseException):
    """The warm-up in the arbiter ran out of time."""


def _outcome(outcome, late, log, worker_pid, before_fork):
    """Log the warm-up's outcome; the text for STATUS."""
    where = "the warm-up" if before_fork else "its warm-up"
    if late:
        log.warning(
            "bitpoll-launcher warm-up: GET %s had no answer within %d s; the server goes on",
            READY_PATH,
            ANSWER_TIMEOUT,
        )
        return "Gunicorn worker %d started; %s GET %s had no answer within %d s" % (
            worker_pid,
            where,
            READY_PATH,
            ANSWER_TIMEOUT,
        )
    if "error" in outcome:
        log.warning(
            "bitpoll-launcher warm-up: GET %s failed after %d ms: %s",
            READY_PATH,
            outcome["ms"],
            outcome["error"],
        )
        return "Gunicorn worker %d started; %s GET %s failed: %s" % (
            worker_pid,
            where,
            READY_PATH,
            outcome["error"],
        )
    status = outcome["status"]
    code = status.split(" ", 1)[0]
    if not code.isdigit() or int(code) >= 400:
        log.warning(
            "bitpoll-launcher warm-up: GET %s answered %s in %d ms",
            READY_PATH,
            status,
            outcome["ms"],
        )
        return "Gunicorn worker %d started; %s GET %s answered %s" % (
            worker_pid,
            where,
            READY_PATH,
            status,
        )
    log.info(
        "bitpoll-launcher warm-up: GET %s answered %s in %d ms%s",
        READY_PATH,
        status,
        outcome["ms"],
        " (in the arbiter, before it forks its workers)" if before_fork else "",
    )
    return "Gunicorn worker %d answered GET %s (%s in %d ms)" % (
        worker_pid,
        READY_PATH,
        status,
        outcome["ms"],
    )


def _warm_up_in_arbiter(server):
    """--preload: the arbiter holds the app; call it once here, in the main thread, at
    most ANSWER_TIMEOUT seconds (a timer signal ends a call that takes longer), and close
    what the request opened (database connections, caches), so the workers it forks
    share the loaded state and inherit no connection. Returns (outcome, late)."""
    import signal

    outcome = {}
    state = {"done": False}

    def on_alarm(signum, frame):
        if not state["done"]:
            raise _Late()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, ANSWER_TIMEOUT)
    late = False
    try:
        _call_app(server.app.wsgi(), READY_PATH, outcome)
        state["done"] = True
    except _Late:
        late = True
    finally:
        state["done"] = True
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    try:
        from django.core.cache import caches
        from django.db import connections

        connections.close_all()
        caches.close_all()
    except Exception as e:
        server.log.warning("bitpoll-launcher warm-up: cannot close what it opened: %s", e)
    # What the app has loaded so far lives on in every worker: keep the garbage collector
    # off it, or each worker's first collection writes to (and so copies) all of it.
    import gc

    gc.collect()
    gc.freeze()
    return outcome, late


def _warm_up(worker):
    """Call the app once with GET READY_PATH, at most ANSWER_TIMEOUT seconds (the worker
    keeps telling the arbiter it is alive meanwhile). Returns the text for STATUS."""
    outcome = {}
    thread = threading.Thread(
        target=_call_app, args=(worker.wsgi, READY_PATH, outcome), name="warm-up", daemon=True
    )
    try:
        thread.start()
    except RuntimeError as e:
        # No thread to be had (TasksMax=, RLIMIT_NPROC): the worker serves without its
        # warm-up rather than fail to boot over it.
        outcome = {"ms": 0, "error": "cannot start a thread for it: %s" % e}
        return _outcome(outcome, False, worker.log, os.getpid(), before_fork=False)
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(min(1.0, max(0.0, deadline - time.monotonic())))
        worker.notify()
    return _outcome(outcome, thread.is_alive(), worker.log, os.getpid(), before_fork=False)


def post_worker_init(worker):
    if MODE == "answer":
        if not _sent[0]:
            _report("begin %d %s" % (os.getpid(), READY_PATH), worker.log)
        text = _warm_up(worker)
        if not _sent[0]:
            _report("end " + text, worker.log)
        return
    if not _notify_socket or _sent[0]:
        return
    _sent[0] = 1
    _notify("READY=1\nSTATUS=Gunicorn worker %d ready" % os.getpid(), worker.log)
