"""The demo app's static files storage: Django's ManifestStaticFilesStorage, which
the tests can make slow or failing on purpose.

DEMO_COLLECTSTATIC_DELAY=N: after the files are copied, print "demo collectstatic:
step i of N" once per second for N seconds before post-processing them (a stop in the
middle of collectstatic). DEMO_COLLECTSTATIC_FAIL=1: then fail with "demo collectstatic
failed on purpose".
"""
import os
import sys
import time

from django.contrib.staticfiles.storage import ManifestStaticFilesStorage


class DemoStaticFilesStorage(ManifestStaticFilesStorage):
    def post_process(self, *args, **kwargs):
        raw = os.environ.get("DEMO_COLLECTSTATIC_DELAY", "").strip()
        steps = int(raw) if raw.isdigit() else 0
        for i in range(1, steps + 1):
            print("demo collectstatic: step %d of %d" % (i, steps), flush=True)
            time.sleep(1)
        if os.environ.get("DEMO_COLLECTSTATIC_FAIL"):
            print("demo collectstatic: failing on purpose", file=sys.stderr, flush=True)
            raise RuntimeError("demo collectstatic failed on purpose")
        yield from super().post_process(*args, **kwargs)
