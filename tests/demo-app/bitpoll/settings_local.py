"""
Deployment settings of the demo app, read from the environment.

The real Bitpoll expects an operator-written ``bitpoll/settings_local.py``. In a
read-only install the package has to carry one that takes everything
deployment-specific from the environment; this is that file for the demo app.
The launcher sets these variables (names are a contract, keep them in sync):

  BITPOLL_DATA_DIR                 required; state lives below it
  BITPOLL_SECRET_KEY               required -> SECRET_KEY
  BITPOLL_FIELD_ENCRYPTION_KEY     required -> FIELD_ENCRYPTION_KEY (a Fernet key, or a
                                   rotation list "NEW,OLD": the first encrypts, all decrypt)
  BITPOLL_SECRET_KEY_FALLBACKS     optional, comma-separated -> SECRET_KEY_FALLBACKS
  BITPOLL_ALLOWED_HOSTS            comma-separated, default "localhost,127.0.0.1"
  BITPOLL_DEBUG                    "1"/"true"/"yes" -> True, default False
  BITPOLL_DB_ENGINE                "sqlite" (default) or "postgresql"
    sqlite:      BITPOLL_DB_PATH (default $BITPOLL_DATA_DIR/db.sqlite3)
    postgresql:  BITPOLL_DB_NAME, BITPOLL_DB_USER, BITPOLL_DB_HOST, BITPOLL_DB_PORT,
                 BITPOLL_DB_PASSWORD
  BITPOLL_STATIC_ROOT              default $BITPOLL_DATA_DIR/static (the launcher sets
                                   $BITPOLL_DATA_DIR/static/current)
  BITPOLL_MEDIA_ROOT               default $BITPOLL_DATA_DIR/media
  BITPOLL_LOCALE_PATHS             ":"-separated catalog directories put before the
                                   source's locale/ in LOCALE_PATHS (the launcher compiles
                                   the catalogs there when the source has none compiled)
  BITPOLL_LANGUAGE_CODE            default "de-de"
  BITPOLL_TIME_ZONE                default "Europe/Berlin"
  BITPOLL_BASE_URL, BITPOLL_SITE_NAME   optional
  BITPOLL_SECURE_COOKIES           "1" -> SESSION_COOKIE_SECURE and CSRF_COOKIE_SECURE

Logging goes to stderr only (the journal under systemd); nothing is logged to files.
"""
import logging
import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = ("1", "true", "yes", "on")


def _get(name, default=None):
    """The variable's value, or ``default`` when it is unset or empty."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value


def _required(name, what):
    value = _get(name)
    if value is None:
        raise ImproperlyConfigured(
            "environment variable %s is not set: it must hold %s" % (name, what)
        )
    return value


def _flag(name):
    return (_get(name, "") or "").strip().lower() in _TRUE


DATA_DIR = _required("BITPOLL_DATA_DIR", "the directory for Bitpoll's state")
if not os.path.isabs(DATA_DIR):
    raise ImproperlyConfigured(
        "BITPOLL_DATA_DIR must be an absolute path, got %r" % DATA_DIR
    )

SECRET_KEY = _required("BITPOLL_SECRET_KEY", "Django's SECRET_KEY")

# Checked by encrypted_model_fields on every Django start (bitpoll.poll.models has an
# encrypted field): a missing or invalid Fernet key stops migrate, collectstatic,
# compilemessages and the web server alike, exactly like the real Bitpoll.
# One key, or a rotation list "NEW,OLD": the first encrypts, every one decrypts.
FIELD_ENCRYPTION_KEY = [
    key.strip()
    for key in _required(
        "BITPOLL_FIELD_ENCRYPTION_KEY",
        "a Fernet key (cryptography.fernet.Fernet.generate_key())",
    ).split(",")
    if key.strip()
]
if len(FIELD_ENCRYPTION_KEY) == 1:
    FIELD_ENCRYPTION_KEY = FIELD_ENCRYPTION_KEY[0]
SECRET_KEY_FALLBACKS = [
    key for key in (_get("BITPOLL_SECRET_KEY_FALLBACKS") or "").split(",") if key
]

ALLOWED_HOSTS = [
    host.strip()
    for host in _get("BITPOLL_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")
    if host.strip()
]

DEBUG = _flag("BITPOLL_DEBUG")

_engine = _get("BITPOLL_DB_ENGINE", "sqlite").strip().lower()
if _engine in ("sqlite", "sqlite3"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _get("BITPOLL_DB_PATH", os.path.join(DATA_DIR, "db.sqlite3")),
        }
    }
elif _engine in ("postgresql", "postgres"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _get("BITPOLL_DB_NAME", "bitpoll"),
            "USER": _get("BITPOLL_DB_USER", ""),
            "HOST": _get("BITPOLL_DB_HOST", ""),
            "PORT": _get("BITPOLL_DB_PORT", ""),
            "PASSWORD": _get("BITPOLL_DB_PASSWORD", ""),
        }
    }
else:
    raise ImproperlyConfigured(
        "BITPOLL_DB_ENGINE must be 'sqlite' or 'postgresql', got %r" % _engine
    )

STATIC_ROOT = _get("BITPOLL_STATIC_ROOT", os.path.join(DATA_DIR, "static"))
MEDIA_ROOT = _get("BITPOLL_MEDIA_ROOT", os.path.join(DATA_DIR, "media"))

_SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCALE_PATHS = tuple(
    p for p in (_get("BITPOLL_LOCALE_PATHS") or "").split(os.pathsep) if p
) + (os.path.join(_SOURCE_DIR, "locale"),)

LANGUAGE_CODE = _get("BITPOLL_LANGUAGE_CODE", "de-de")
TIME_ZONE = _get("BITPOLL_TIME_ZONE", "Europe/Berlin")

if _get("BITPOLL_BASE_URL") is not None:
    BASE_URL = _get("BITPOLL_BASE_URL")
if _get("BITPOLL_SITE_NAME") is not None:
    SITE_NAME = _get("BITPOLL_SITE_NAME")

if _flag("BITPOLL_SECURE_COOKIES"):
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

class _WithoutTraceback(logging.Formatter):
    """One line per record: the message without the exception's traceback."""

    def formatException(self, ei):
        return ""

    def formatStack(self, stack_info):
        return ""


# A request with a Host header not in ALLOWED_HOSTS (scanners send them all day) is
# answered with 400 and logged by django.security.DisallowedHost with the exception
# attached: one line saying which host, not a traceback per request.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(levelname)s %(name)s: %(message)s"},
        "one_line": {"()": _WithoutTraceback, "format": "%(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
        },
        "console_one_line": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "one_line",
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.security.DisallowedHost": {
            "handlers": ["console_one_line"],
            "level": "WARNING",
            "propagate": False,
        },
        "bitpoll": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
