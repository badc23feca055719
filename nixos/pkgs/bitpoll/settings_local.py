"""Deployment settings for a read-only install of Bitpoll (the Nix package).

Bitpoll's settings.py ends with ``from .settings_local import *``. In the Nix
store nothing can be edited, so everything deployment-specific is read from
BITPOLL_* environment variables, which bitpoll-launcher sets (it builds the
server's environment from its TOML config and secrets). docs/settings.md lists
the contract; keep the two in sync.

Required: BITPOLL_DATA_DIR, BITPOLL_SECRET_KEY, BITPOLL_FIELD_ENCRYPTION_KEY.
Everything else has a default. A missing or malformed variable raises
ImproperlyConfigured naming the variable, so `manage.py check` and the
launcher's `check` report it instead of a traceback deep inside Django.

Only names without a leading underscore end up in Django's settings (the
star import), so every helper here starts with one.
"""

import base64 as _base64
import binascii as _binascii
import logging as _logging
import os as _os

from django.core.exceptions import ImproperlyConfigured as _ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

# The directory holding manage.py, bitpoll/ and locale/ (read-only).
_SOURCE_DIR = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))


def _required(name):
    value = _os.environ.get(name, "")
    if not value.strip():
        raise _ImproperlyConfigured(
            f"{name} is not set; bitpoll-launcher sets it from its config "
            "(see docs/settings.md)"
        )
    return value.strip()


def _optional(name, default=None):
    value = _os.environ.get(name, "").strip()
    return value if value else default


def _bool(name, default=False):
    value = _os.environ.get(name)
    if value is None:
        return default
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _ImproperlyConfigured(
        f"{name}={value!r} is not a boolean; use one of true/false, yes/no, on/off, 1/0"
    )


def _list(name, sep=","):
    return [item.strip() for item in _os.environ.get(name, "").split(sep) if item.strip()]


def _int(name, default, low, high):
    value = _optional(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise _ImproperlyConfigured(f"{name}={value!r} is not a whole number from {low} to {high}")
    return number


def _mapping(name, default):
    # "django_field=ldap_attribute,..." (LDAP attribute maps).
    value = _optional(name)
    if value is None:
        return dict(default)
    result = {}
    for item in value.split(","):
        key, sep, attr = item.partition("=")
        if not sep or not key.strip() or not attr.strip():
            raise _ImproperlyConfigured(
                f"{name}: {item.strip()!r} is not FIELD=ATTRIBUTE; write e.g. "
                "first_name=givenName,last_name=sn,email=mail"
            )
        result[key.strip()] = attr.strip()
    return result


def _fernet_key(name):
    # One key, or a rotation list "NEW,OLD": the first encrypts, every one decrypts.
    keys = [k.strip() for k in _required(name).split(",") if k.strip()]
    for key in keys:
        try:
            raw = _base64.urlsafe_b64decode(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError, _binascii.Error):
            raw = b""
        if len(raw) != 32:
            raise _ImproperlyConfigured(
                f"{name} is not a Fernet key or a comma-separated list of them (32 url-safe "
                "base64-encoded bytes each); generate one with: python -c "
                "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            )
    return keys[0] if len(keys) == 1 else keys


# --- Data and secrets -------------------------------------------------------

DATA_DIR = _required("BITPOLL_DATA_DIR")

SECRET_KEY = _required("BITPOLL_SECRET_KEY")
SECRET_KEY_FALLBACKS = _list("BITPOLL_SECRET_KEY_FALLBACKS")

# Encrypts stored CalDAV URLs. Losing it makes them unreadable: never rotate it
# by regenerating while a database exists.
FIELD_ENCRYPTION_KEY = _fernet_key("BITPOLL_FIELD_ENCRYPTION_KEY")

DEBUG = _bool("BITPOLL_DEBUG", False)

# Empty means every request is answered with 400 (Django's default).
ALLOWED_HOSTS = _list("BITPOLL_ALLOWED_HOSTS")

# --- Database ---------------------------------------------------------------

_engine = _optional("BITPOLL_DB_ENGINE", "sqlite").lower()
if _engine in ("sqlite", "sqlite3"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _optional("BITPOLL_DB_PATH", _os.path.join(DATA_DIR, "db.sqlite3")),
        }
    }
elif _engine in ("postgresql", "postgres"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _optional("BITPOLL_DB_NAME", "bitpoll"),
            "USER": _optional("BITPOLL_DB_USER", ""),
            "PASSWORD": _optional("BITPOLL_DB_PASSWORD", ""),
            # Empty host: the local Unix socket (peer authentication).
            "HOST": _optional("BITPOLL_DB_HOST", ""),
            "PORT": _optional("BITPOLL_DB_PORT", ""),
        }
    }
else:
    raise _ImproperlyConfigured(
        f"BITPOLL_DB_ENGINE={_engine!r} is not supported; use 'sqlite' or 'postgresql'"
    )

# --- Files ------------------------------------------------------------------

# The package runs collectstatic when it is built, into share/bitpoll-static
# beside the source; nginx serves it as /static/ and Django reads its
# staticfiles.json. Without it (a tree that was not built so), collectstatic
# writes below the data directory.
_BUILT_STATIC = _os.path.join(_os.path.dirname(_SOURCE_DIR), "bitpoll-static")
STATIC_ROOT = _optional(
    "BITPOLL_STATIC_ROOT",
    _BUILT_STATIC if _os.path.isdir(_BUILT_STATIC) else _os.path.join(DATA_DIR, "static"),
)
STATIC_PRECOMPILER_ROOT = STATIC_ROOT

# Where no web server can read STATIC_ROOT (a container image, whose replicas each carry
# the tree built into the image), the app serves /static/ itself: WhiteNoise (installed
# in the image) reads the tree once when a worker loads the app and answers requests
# below STATIC_URL, hashed names with a far-future Cache-Control (immutable). Appended
# to settings.py's middleware list (settings_local cannot insert earlier): the
# middleware before it add headers to a file response and touch no session.
_SERVE_STATIC = _bool("BITPOLL_SERVE_STATIC", False)

MEDIA_ROOT = _optional("BITPOLL_MEDIA_ROOT", _os.path.join(DATA_DIR, "media"))

# The .mo files are compiled when the package is built (the store is read-only); where
# they are not, the launcher compiles them into the data directory and names those
# directories in BITPOLL_LOCALE_PATHS, which come first.
LOCALE_PATHS = tuple(
    p for p in (_optional("BITPOLL_LOCALE_PATHS") or "").split(_os.pathsep) if p
) + (_os.path.join(_SOURCE_DIR, "locale"),)

# --- Site -------------------------------------------------------------------

# Set only when given, so settings.py's defaults stay in force otherwise.
if _optional("BITPOLL_LANGUAGE_CODE"):
    LANGUAGE_CODE = _optional("BITPOLL_LANGUAGE_CODE")
if _optional("BITPOLL_TIME_ZONE"):
    TIME_ZONE = _optional("BITPOLL_TIME_ZONE")
if _optional("BITPOLL_BASE_URL"):
    BASE_URL = _optional("BITPOLL_BASE_URL").rstrip("/")
if _optional("BITPOLL_SITE_NAME"):
    SITE_NAME = _optional("BITPOLL_SITE_NAME")

# Served over HTTPS (TLS ends at the reverse proxy): cookies only over HTTPS.
# gunicorn trusts X-Forwarded-Proto from 127.0.0.1 (forwarded_allow_ips), so
# request.is_secure() is right behind a local nginx without further settings. A proxy
# at another address (a front container, an Ingress controller) must be named in
# gunicorn's --forwarded-allow-ips, or Django takes every request for plain HTTP and
# refuses each POST ("Origin checking failed"); see examples/container.
SESSION_COOKIE_SECURE = _bool("BITPOLL_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Links and texts of the page footer. Bitpoll's own defaults are placeholders (a link to
# example.com, an imprint reading "Text goes here"): a deployment sets its own. An empty
# BITPOLL_HOME_URL (the default here) shows no link.
HOME_URL = _optional("BITPOLL_HOME_URL", "")
HOME_URL_NAME = _optional("BITPOLL_HOME_URL_NAME", "Dashboard")
if _optional("BITPOLL_IMPRINT_URL"):
    IMPRINT_URL = _optional("BITPOLL_IMPRINT_URL")
if _optional("BITPOLL_IMPRINT_TEXT"):
    IMPRINT_TEXT = _optional("BITPOLL_IMPRINT_TEXT")
if _optional("BITPOLL_PRIVACY_URL"):
    PRIVACY_URL = _optional("BITPOLL_PRIVACY_URL")
if _optional("BITPOLL_URL_PREFIX"):
    URL_PREFIX = _optional("BITPOLL_URL_PREFIX").strip("/")

# --- Accounts and polls -----------------------------------------------------

# Self-service registration (and with it the group pages, as upstream couples them).
REGISTER_ENABLED = _bool("BITPOLL_REGISTER_ENABLED", True)
GROUP_MANAGEMENT = _bool("BITPOLL_GROUP_MANAGEMENT", REGISTER_ENABLED)
PUBLIC_POLLS = _bool("BITPOLL_PUBLIC_POLLS", True)
POLL_CREATION_REQUIRES_LOGIN = _bool("BITPOLL_POLL_CREATION_REQUIRES_LOGIN", False)
CALENDAR_ENABLED = _bool("BITPOLL_CALENDAR_ENABLED", True)

# --- Mail -------------------------------------------------------------------

# Registration, invitations and vote notifications are sent by mail (SMTP). Without
# BITPOLL_EMAIL_HOST Django's default stands: a server on localhost, port 25.
if _optional("BITPOLL_EMAIL_BACKEND"):
    EMAIL_BACKEND = _optional("BITPOLL_EMAIL_BACKEND")
EMAIL_HOST = _optional("BITPOLL_EMAIL_HOST", "localhost")
EMAIL_USE_TLS = _bool("BITPOLL_EMAIL_USE_TLS", False)  # STARTTLS, usually port 587
EMAIL_USE_SSL = _bool("BITPOLL_EMAIL_USE_SSL", False)  # TLS from the start, port 465
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise _ImproperlyConfigured(
        "BITPOLL_EMAIL_USE_TLS and BITPOLL_EMAIL_USE_SSL are both on; choose one "
        "(STARTTLS on port 587, or TLS from the start on port 465)"
    )
EMAIL_PORT = _int("BITPOLL_EMAIL_PORT", 465 if EMAIL_USE_SSL else 25, 1, 65535)
EMAIL_HOST_USER = _optional("BITPOLL_EMAIL_HOST_USER", "")
# A secret: configure it in [secrets], never in [environment].
EMAIL_HOST_PASSWORD = _optional("BITPOLL_EMAIL_HOST_PASSWORD", "")
EMAIL_TIMEOUT = _int("BITPOLL_EMAIL_TIMEOUT", 30, 1, 3600)
if _optional("BITPOLL_DEFAULT_FROM_EMAIL"):
    DEFAULT_FROM_EMAIL = _optional("BITPOLL_DEFAULT_FROM_EMAIL")
    SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Where a failed registration mail is reported, and the contact on the privacy page.
if _optional("BITPOLL_TEAM_EMAIL"):
    TEAM_EMAIL = _optional("BITPOLL_TEAM_EMAIL")
if _optional("BITPOLL_MAIL_SIGNATURE"):
    MAIL_SIGNATURE = _optional("BITPOLL_MAIL_SIGNATURE")
# Group mails put it before their subject (Django's default is "[Django] ").
EMAIL_SUBJECT_PREFIX = _optional(
    "BITPOLL_EMAIL_SUBJECT_PREFIX",
    "[" + (_optional("BITPOLL_SITE_NAME") or "Bitpoll") + "]",
) + " "

# --- LDAP -------------------------------------------------------------------

# Log in with LDAP accounts (django-auth-ldap), besides the accounts in the database.
# Set BITPOLL_AUTH_LDAP_SERVER_URI to turn it on. Users are found by a search below
# BITPOLL_AUTH_LDAP_USER_SEARCH_BASE (bound as BITPOLL_AUTH_LDAP_BIND_DN, or
# anonymously) or, instead, bound directly with BITPOLL_AUTH_LDAP_USER_DN_TEMPLATE.
# Lists of DNs are separated by ";" (a DN holds commas).
if _optional("BITPOLL_AUTH_LDAP_SERVER_URI"):
    import ldap as _ldap
    from django_auth_ldap.config import LDAPSearch as _LDAPSearch

    AUTHENTICATION_BACKENDS = (
        "django_auth_ldap.backend.LDAPBackend",
        "django.contrib.auth.backends.ModelBackend",
    )
    AUTH_LDAP_SERVER_URI = _optional("BITPOLL_AUTH_LDAP_SERVER_URI")
    AUTH_LDAP_BIND_DN = _optional("BITPOLL_AUTH_LDAP_BIND_DN", "")
    # A secret: configure it in [secrets], never in [environment].
    AUTH_LDAP_BIND_PASSWORD = _optional("BITPOLL_AUTH_LDAP_BIND_PASSWORD", "")
    AUTH_LDAP_START_TLS = _bool("BITPOLL_AUTH_LDAP_START_TLS", False)
    _ldap_options = {}
    if _optional("BITPOLL_AUTH_LDAP_CA_FILE"):
        _ldap_options[_ldap.OPT_X_TLS_CACERTFILE] = _optional("BITPOLL_AUTH_LDAP_CA_FILE")
        _ldap_options[_ldap.OPT_X_TLS_NEWCTX] = 0
    AUTH_LDAP_GLOBAL_OPTIONS = _ldap_options
    if _optional("BITPOLL_AUTH_LDAP_USER_DN_TEMPLATE"):
        AUTH_LDAP_USER_DN_TEMPLATE = _optional("BITPOLL_AUTH_LDAP_USER_DN_TEMPLATE")
    elif _optional("BITPOLL_AUTH_LDAP_USER_SEARCH_BASE"):
        AUTH_LDAP_USER_SEARCH = _LDAPSearch(
            _optional("BITPOLL_AUTH_LDAP_USER_SEARCH_BASE"),
            _ldap.SCOPE_SUBTREE,
            _optional("BITPOLL_AUTH_LDAP_USER_SEARCH_FILTER", "(uid=%(user)s)"),
        )
    else:
        raise _ImproperlyConfigured(
            "BITPOLL_AUTH_LDAP_SERVER_URI is set but neither BITPOLL_AUTH_LDAP_USER_SEARCH_BASE "
            "nor BITPOLL_AUTH_LDAP_USER_DN_TEMPLATE says where the users are"
        )
    AUTH_LDAP_USER_ATTR_MAP = _mapping(
        "BITPOLL_AUTH_LDAP_USER_ATTR_MAP",
        {"first_name": "givenName", "last_name": "sn", "email": "mail"},
    )
    AUTH_LDAP_ALWAYS_UPDATE_USER = _bool("BITPOLL_AUTH_LDAP_ALWAYS_UPDATE_USER", True)
    if _optional("BITPOLL_AUTH_LDAP_GROUP_SEARCH_BASE"):
        from django_auth_ldap.config import (
            GroupOfNamesType as _GroupOfNamesType,
            PosixGroupType as _PosixGroupType,
        )

        _group_types = {"posix": _PosixGroupType, "groupOfNames": _GroupOfNamesType}
        _group_type = _optional("BITPOLL_AUTH_LDAP_GROUP_TYPE", "posix")
        if _group_type not in _group_types:
            raise _ImproperlyConfigured(
                f"BITPOLL_AUTH_LDAP_GROUP_TYPE={_group_type!r} is not supported; use "
                "'posix' or 'groupOfNames'"
            )
        AUTH_LDAP_GROUP_SEARCH = _LDAPSearch(
            _optional("BITPOLL_AUTH_LDAP_GROUP_SEARCH_BASE"),
            _ldap.SCOPE_SUBTREE,
            _optional(
                "BITPOLL_AUTH_LDAP_GROUP_SEARCH_FILTER",
                "(objectClass=posixGroup)" if _group_type == "posix" else "(objectClass=groupOfNames)",
            ),
        )
        AUTH_LDAP_GROUP_TYPE = _group_types[_group_type]()
        AUTH_LDAP_MIRROR_GROUPS = _bool("BITPOLL_AUTH_LDAP_MIRROR_GROUPS", False)
        _flags = {}
        if _list("BITPOLL_AUTH_LDAP_STAFF_GROUPS", ";"):
            _flags["is_staff"] = _list("BITPOLL_AUTH_LDAP_STAFF_GROUPS", ";")
        if _list("BITPOLL_AUTH_LDAP_SUPERUSER_GROUPS", ";"):
            _flags["is_superuser"] = _list("BITPOLL_AUTH_LDAP_SUPERUSER_GROUPS", ";")
        AUTH_LDAP_USER_FLAGS_BY_GROUP = _flags
    elif _optional("BITPOLL_AUTH_LDAP_STAFF_GROUPS") or _optional(
        "BITPOLL_AUTH_LDAP_SUPERUSER_GROUPS"
    ):
        raise _ImproperlyConfigured(
            "BITPOLL_AUTH_LDAP_STAFF_GROUPS and _SUPERUSER_GROUPS need "
            "BITPOLL_AUTH_LDAP_GROUP_SEARCH_BASE (where the groups are)"
        )

# --- What settings.py expects settings_local to define ----------------------

INSTALLED_APPS_LOCAL = []
MIDDLEWARE_LOCAL = ["whitenoise.middleware.WhiteNoiseMiddleware"] if _SERVE_STATIC else []
PIPELINE_LOCAL = {}

# Django's implicit default, made explicit: django-token-bucket's migrations
# use AutoField, and without this `manage.py check` warns (models.W042).
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# --- Logging ----------------------------------------------------------------


class _WithoutTraceback(_logging.Formatter):
    """One line per record: the message without the exception's traceback."""

    def formatException(self, ei):
        return ""

    def formatStack(self, stack_info):
        return ""


# Warnings and errors (including the tracebacks of 500 responses, which Django
# otherwise only mails to ADMINS) go to stderr, i.e. the journal. A request
# whose Host header is not in ALLOWED_HOSTS (scanners send them all day) is
# answered with 400 and logged in one line naming the host, not with a
# traceback per request.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "one_line": {"()": _WithoutTraceback, "format": "%(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler"},
        "stderr_one_line": {"class": "logging.StreamHandler", "formatter": "one_line"},
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "django.security.DisallowedHost": {
            "handlers": ["stderr_one_line"],
            "level": "WARNING",
            "propagate": False,
        },
    },
}
