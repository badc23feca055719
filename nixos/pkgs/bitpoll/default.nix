# Bitpoll, the Django app, as a read-only tree with its assets built in, plus the
# Python environment that runs it (Django, gunicorn and every dependency, from
# nixpkgs or from ../python/*.nix).
#
#   $out/share/bitpoll            source_dir: manage.py, bitpoll/, locale/ (.mo compiled)
#   $out/share/bitpoll/bitpoll/settings_local.py   reads BITPOLL_* (see docs/nixos.md)
#   $out/share/bitpoll-static     collectstatic's output (SCSS compiled, hashed names,
#                                 staticfiles.json): STATIC_ROOT, served as /static/
#   passthru.python               the interpreter environment ([app] python, gunicorn)
#
# collectstatic and compilemessages run here, once, with throw-away keys
# (build-assets.sh): a start of the service prepares by migrate alone, which writes
# to the data directory as the service user (bitpoll-launcher).
{
  lib,
  stdenvNoCC,
  python3,
  gettext,
  noto-fonts-color-emoji,

  # The Bitpoll source tree (the flake's bitpoll-src input).
  src,
  # Reported version; the upstream commit date of the pinned source.
  version ? "0-unstable-2026-08-08",

  # Optional integrations. PostgreSQL and LDAP are cheap (cached in nixpkgs);
  # OpenID needs two packages built here; Sentry rebuilds a large test-free set.
  withPostgres ? true,
  withLdap ? true,
  withOpenID ? false,
  withSentry ? false,
  # Extra Python packages for INSTALLED_APPS_LOCAL-style additions: ps: [ ... ].
  extraPythonPackages ? (_: [ ]),
}:

let
  python = python3.override {
    self = python;
    packageOverrides = import ../python-packages.nix;
  };

  pythonEnv = python.withPackages (
    ps:
    with ps;
    [
      django
      gunicorn

      # requirements.in
      django-widget-tweaks
      django-markdownify
      pytz
      django-simple-csp
      libsasscompiler
      django-pipeline
      libsass
      django-friendly-tag-loader
      django-encrypted-model-fields
      caldav
      icalendar
      django-token-bucket

      # direct imports and extras the requirements only pull in indirectly
      markdown
      bleach
      tinycss2 # bleach[css], used by django-markdownify
      cryptography # Fernet (FIELD_ENCRYPTION_KEY)
      tzdata
    ]
    ++ lib.optionals withPostgres [ psycopg2 ]
    ++ lib.optionals withLdap [
      django-auth-ldap
      python-ldap
    ]
    ++ lib.optionals withOpenID [ simple-openid-connect ]
    ++ lib.optionals withSentry [ sentry-sdk ]
    ++ extraPythonPackages ps
  );
in
stdenvNoCC.mkDerivation {
  pname = "bitpoll";
  inherit version src;

  nativeBuildInputs = [ gettext ];

  dontConfigure = true;

  # The colour emoji font is over 4 MiB; some source snapshots lack it. Take
  # nixpkgs' copy when it is missing or empty (collectstatic fails without it).
  postPatch = ''
    font=bitpoll/base/static/fonts/NotoColorEmoji.ttf
    if [ ! -s "$font" ]; then
      noto=$(find ${noto-fonts-color-emoji}/share/fonts -name NotoColorEmoji.ttf | head -n 1)
      if [ -z "$noto" ]; then
        echo "NotoColorEmoji.ttf is missing from the source and from noto-fonts-color-emoji" >&2
        exit 1
      fi
      rm -f "$font"
      install -Dm0644 "$noto" "$font"
    fi
  '';

  dontBuild = true;

  installPhase = ''
    runHook preInstall
    dest=$out/share/bitpoll
    static=$out/share/bitpoll-static
    mkdir -p "$dest"
    cp -r manage.py bitpoll locale "$dest"/
    install -m0644 ${./settings_local.py} "$dest/bitpoll/settings_local.py"

    # Catalogs (.mo next to each .po), collectstatic into $static (SCSS through
    # libsass, hashed names, staticfiles.json) and bytecode, with throw-away keys
    # that never reach $out: the one implementation the container image and the
    # tests on the real Bitpoll run too.
    ${stdenvNoCC.shell} ${./build-assets.sh} \
      --python ${pythonEnv.interpreter} \
      --source "$dest" \
      --static "$static"
    runHook postInstall
  '';

  # Boot the real application once more from $out: settings import with the
  # packaged STATIC_ROOT as default, every installed app loads, migrations apply on
  # Django from this package set, the manifest is found. A broken dependency fails
  # the build here rather than on the first service start.
  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    export HOME=$TMPDIR
    export BITPOLL_DATA_DIR=$TMPDIR/check-data
    mkdir -p "$BITPOLL_DATA_DIR"
    export BITPOLL_SECRET_KEY=build-time-check-only-not-a-secret
    BITPOLL_FIELD_ENCRYPTION_KEY=$(${pythonEnv.interpreter} -c \
      'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
    export BITPOLL_FIELD_ENCRYPTION_KEY
    unset BITPOLL_STATIC_ROOT
    export BITPOLL_ALLOWED_HOSTS=localhost
    export DJANGO_SETTINGS_MODULE=bitpoll.settings
    export PYTHONPATH=$out/share/bitpoll
    export PYTHONDONTWRITEBYTECODE=1
    cd "$TMPDIR"
    ${pythonEnv.interpreter} $out/share/bitpoll/manage.py check
    ${pythonEnv.interpreter} $out/share/bitpoll/manage.py migrate --noinput -v 0
    test "$(${pythonEnv.interpreter} -c 'import django; django.setup(); from django.conf import settings; print(settings.STATIC_ROOT)')" = "$out/share/bitpoll-static"
    test -s $out/share/bitpoll/locale/de_DE/LC_MESSAGES/django.mo
    ${pythonEnv}/bin/gunicorn --check-config bitpoll.wsgi:application
    runHook postInstallCheck
  '';

  passthru = {
    python = pythonEnv;
    pythonPackages = python.pkgs;
    gunicornVersion = python.pkgs.gunicorn.version;
  };

  meta = {
    description = "Web application for polls and finding dates";
    homepage = "https://github.com/fsinfuhh/Bitpoll";
    license = lib.licenses.gpl3Only;
    platforms = lib.platforms.linux;
  };
}
