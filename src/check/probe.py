# Read-only probes for `bitpoll-launcher check`, run as the service user (before the first
# start: as a stand-in uid with a throw-away data directory) with the app's environment. Prints one JSON object on the last line of stdout. Never writes: no
# bytecode (PYTHONDONTWRITEBYTECODE), no database file is created, no command that
# changes state is run.
import json
import os
import shutil
import sys


def error_text(e):
    return "%s: %s" % (type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "")


def version_of(dist):
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def link_on_the_way(path):
    """The first symbolic link on `path` inside the data directory, if any: the probe
    never looks through one. The launcher's own `current` link (to a name beside it) is
    the one expected."""
    data = os.environ.get("BITPOLL_DATA_DIR", "")
    if not path or not data:
        return None
    p = os.path.normpath(path)
    parts = []
    while p.startswith(data.rstrip("/") + "/") or p == data:
        parts.append(p)
        p = os.path.dirname(p)
    for q in reversed(parts):
        if os.path.islink(q):
            if q == os.path.normpath(path) and os.path.basename(q) == "current" and "/" not in os.readlink(q):
                continue
            return q
    return None


def probe_encrypted(db):
    """Decrypt one stored encrypted value with the configured keys. The field library
    swallows a wrong key (the app shows ciphertext), so only a direct try tells."""
    try:
        from encrypted_model_fields.fields import EncryptedMixin, decrypt_str
    except Exception:
        return None
    from django.apps import apps

    qn = db.ops.quote_name
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if not isinstance(field, EncryptedMixin):
                continue
            col, table = qn(field.column), qn(model._meta.db_table)
            try:
                with db.cursor() as c:
                    c.execute(
                        "SELECT %s FROM %s WHERE %s IS NOT NULL AND %s <> '' LIMIT 1"
                        % (col, table, col, col)
                    )
                    row = c.fetchone()
            except Exception:
                continue  # not migrated yet
            if row is None:
                continue
            where = "%s.%s" % (model._meta.label, field.name)
            try:
                decrypt_str(row[0] if isinstance(row[0], str) else bytes(row[0]).decode())
                return {"field": where, "ok": True}
            except Exception:
                return {"field": where, "ok": False}
    return None


def main(paths, options):
    res = {"python": sys.version.split()[0], "executable": sys.executable}
    res["access"] = {
        p: {"exists": os.path.exists(p), "writable": os.access(p, os.W_OK)} for p in paths
    }
    res["gunicorn"] = version_of("gunicorn")
    res["msgfmt"] = shutil.which("msgfmt")
    try:
        import django
    except Exception as e:
        res["django_error"] = error_text(e)
        return res
    res["django"] = django.get_version()
    try:
        django.setup()
    except Exception as e:
        res["setup_error"] = error_text(e)
        return res

    from django.conf import settings
    from django.core import checks

    try:
        messages = checks.run_checks(include_deployment_checks=True)
        res["checks"] = [
            {"level": m.level, "id": m.id, "msg": str(m.msg), "hint": str(m.hint) if m.hint else None}
            for m in messages
            if not m.is_silenced()
        ]
    except Exception as e:
        res["checks_error"] = error_text(e)

    from django.db import connections

    db = connections["default"]
    name = str(db.settings_dict.get("NAME") or "")
    res["db"] = {"vendor": db.vendor, "name": name if db.vendor == "sqlite" else None}
    if not options.get("database", True):
        # Before the first start: the connection depends on the service user.
        res["db"]["skipped"] = True
    elif db.vendor == "sqlite" and not os.path.exists(name):
        # Connecting would create the file; check changes nothing.
        res["db"]["exists"] = False
    else:
        res["db"]["exists"] = True
        try:
            db.ensure_connection()
            from django.db.migrations.executor import MigrationExecutor

            executor = MigrationExecutor(db)
            plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
            res["pending"] = ["%s.%s" % (m.app_label, m.name) for m, _ in plan]
            res["encrypted"] = probe_encrypted(db)
        except Exception as e:
            res["db"]["error"] = error_text(e)
        finally:
            db.close()

    res["static_root"] = str(settings.STATIC_ROOT) if settings.STATIC_ROOT else None
    try:
        from django.contrib.staticfiles.storage import staticfiles_storage

        manifest = getattr(staticfiles_storage, "manifest_name", None)
        root = str(settings.STATIC_ROOT) if settings.STATIC_ROOT else ""
        linked = link_on_the_way(root)
        if linked:
            res["static_error"] = "STATIC_ROOT leads through the symbolic link %s" % linked
        elif manifest and settings.STATIC_ROOT:
            path = os.path.join(str(settings.STATIC_ROOT), manifest)
            res["manifest"] = {"path": path, "exists": os.path.exists(path)}
    except Exception as e:
        res["static_error"] = error_text(e)
    return res


if __name__ == "__main__":
    result = main(
        json.loads(sys.argv[1]) if len(sys.argv) > 1 else [],
        json.loads(sys.argv[2]) if len(sys.argv) > 2 else {},
    )
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # The answer is out; skip the interpreter's teardown.
    os._exit(0)
