"""
Settings of the Bitpoll-shaped demo app.

Like the real Bitpoll, this module holds the application's fixed settings and ends
with ``from .settings_local import *``: every deployment-specific value (secrets,
paths, database, hosts) comes from ``bitpoll/settings_local.py``, which here reads
them from the environment the launcher prepares.
"""
import os

# The source dir: the directory holding manage.py, bitpoll/ and locale/.
BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT_DIR = BASE_DIR

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "encrypted_model_fields",
    "bitpoll.poll",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bitpoll.urls"
WSGI_APPLICATION = "bitpoll.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

STATIC_URL = "/static/"
MEDIA_URL = "/media/"
STATICFILES_DIRS = [os.path.join(BASE_DIR, "bitpoll", "static")]
# Hashed file names plus staticfiles.json, written by collectstatic. With DEBUG=False
# and no manifest, every page that uses {% static %} fails with "Missing staticfiles
# manifest entry", just like the real Bitpoll's PipelineManifestStorage. (Django's
# ManifestStaticFilesStorage, which tests can make slow or failing: poll/storage.py.)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "bitpoll.poll.storage.DemoStaticFilesStorage",
    },
}

LANGUAGE_CODE = "de-de"
TIME_ZONE = "Europe/Berlin"
USE_I18N = True
USE_TZ = True
LANGUAGES = (
    ("de", "Deutsch"),
    ("en", "English"),
)
# The source's catalogs; settings_local puts the launcher's compiled ones first.
LOCALE_PATHS = (os.path.join(BASE_DIR, "locale"),)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SITE_NAME = "Bitpoll"
BASE_URL = "http://localhost:8000"

from .settings_local import *  # noqa: E402,F401,F403
