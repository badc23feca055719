# Python package set for Bitpoll: use as
#   python3.override { self = python; packageOverrides = import ./python-packages.nix; }
#
# - Django 6.0 (nixpkgs' django_6; upstream Bitpoll pins 6.0.x) for the whole set, so
#   every Django app below sees one Django. nixpkgs 26.05's default `django` is the 5.2
#   LTS line; Django 6.0 needs Python >= 3.12.
# - Packages nixpkgs 26.05 lacks, packaged here with buildPythonPackage from their PyPI
#   sdists (never pip at build or run time).
# - Test suites off for nixpkgs' Django-dependent packages: they are rebuilt against
#   Django 6.0 anyway, and their suites are written for the Django nixpkgs tested them
#   with. The bitpoll package's build (collectstatic) and install check exercise the
#   real application instead.
final: prev:
let
  noCheck = pkg: pkg.overridePythonAttrs (_: { doCheck = false; });
in
{
  django = prev.django_6;

  # Not in nixpkgs.
  django-pipeline = final.callPackage ./python/django-pipeline.nix { };
  libsasscompiler = final.callPackage ./python/libsasscompiler.nix { };
  django-simple-csp = final.callPackage ./python/django-simple-csp.nix { };
  django-friendly-tag-loader = final.callPackage ./python/django-friendly-tag-loader.nix { };
  django-token-bucket = final.callPackage ./python/django-token-bucket.nix { };
  cryptojwt = final.callPackage ./python/cryptojwt.nix { };
  simple-openid-connect = final.callPackage ./python/simple-openid-connect.nix { };

  # From nixpkgs (rebuilt against the Django above).
  django-markdownify = noCheck prev.django-markdownify;
  django-encrypted-model-fields = noCheck prev.django-encrypted-model-fields;
  django-widget-tweaks = noCheck prev.django-widget-tweaks;
  django-auth-ldap = noCheck prev.django-auth-ldap;
  sentry-sdk = noCheck prev.sentry-sdk;
}
