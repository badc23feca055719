# Written by bitpoll-launcher for [server] ready = "worker"; passed to gunicorn with -c.
#
# gunicorn's arbiter sends READY=1 as soon as its socket listens, before any worker
# exists, so systemd reports the service started while no request can be answered yet.
# This config takes NOTIFY_SOCKET away from gunicorn (its own sd_notify becomes a no-op)
# and sends READY=1 from the first worker that has loaded the app and is about to accept
# connections. The unit needs NotifyAccess=all: the worker is not the main process.
# A shared byte (an anonymous mapping, inherited by every forked worker) makes later
# workers stay silent.

import mmap
import os
import socket

_notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
_sent = mmap.mmap(-1, 1)


def post_worker_init(worker):
    if not _notify_socket or _sent[0]:
        return
    _sent[0] = 1
    address = _notify_socket
    if address.startswith("@"):
        address = "\0" + address[1:]
    message = "READY=1\nSTATUS=Gunicorn worker %d ready" % os.getpid()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:
        worker.log.warning("bitpoll-launcher ready hook: cannot notify systemd: %s", e)
