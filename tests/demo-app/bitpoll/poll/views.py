import hashlib
import os
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from bitpoll.poll.models import Poll

# Presence (never values) of these variables is reported by /whoami.
_CONTRACT_ENV = ("BITPOLL_SECRET_KEY", "BITPOLL_FIELD_ENCRYPTION_KEY", "BITPOLL_DATA_DIR")


def index(request):
    polls = Poll.objects.all()[:20]
    return render(
        request,
        "poll/index.html",
        {
            "polls": polls,
            "site_name": settings.SITE_NAME,
            "tagline": _("Schedule meetings and make decisions."),
        },
    )


def allocate(request):
    """Take ``?mb=N`` MiB (written, so resident) for the duration of the request, to
    meet a unit's MemoryMax=; answers how much was held."""
    megabytes = int(request.GET.get("mb", "0"))
    held = b"\x01" * (megabytes << 20)
    return HttpResponse("held %d MiB" % (len(held) >> 20), content_type="text/plain")


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


def slow(request):
    """Answers after ?s=N seconds (at most 120): a first request that takes long."""
    raw = request.GET.get("s", "1")
    time.sleep(min(int(raw) if raw.isdigit() else 1, 120))
    return HttpResponse("slow ok", content_type="text/plain")


def whoami(request):
    """Identity and environment of the serving process, for the launcher's tests.

    Secrets are never echoed: the BITPOLL_* contract variables are reported by name
    only, and the variables named in DEMO_REPORT_ENV (comma-separated) by the sha256
    hex digest of their value (null when unset).
    """
    reported = {}
    for name in os.environ.get("DEMO_REPORT_ENV", "").split(","):
        name = name.strip()
        if not name:
            continue
        value = os.environ.get(name)
        reported[name] = (
            None if value is None else hashlib.sha256(value.encode("utf-8")).hexdigest()
        )
    return JsonResponse(
        {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "env_present": [name for name in _CONTRACT_ENV if name in os.environ],
            "env_sha256": reported,
        }
    )
