# Python package set for Bitpoll: use as
#   python3.override { self = python; packageOverrides = import ./python-packages.nix; }
#
# - Django 5.2 (5.1 where the nixpkgs in use has no django_5_2) for the whole
#   set, so every Django app below sees one Django. nixpkgs 25.05 defaults to 4.2.
# - Packages nixpkgs 25.05 lacks, packaged here with buildPythonPackage from
#   their PyPI sdists (never pip at build or run time).
# - Test suites off for nixpkgs' Django-dependent packages: they are rebuilt
#   against the newer Django anyway, and their suites are written for the Django
#   nixpkgs tested them with. The bitpoll package's installCheck exercises the
#   real application instead.
final: prev:
let
  noCheck = pkg: pkg.overridePythonAttrs (_: { doCheck = false; });
in
{
  django = prev.django_5_2 or prev.django_5;

  # Missing from nixpkgs 25.05.
  django-pipeline = final.callPackage ./python/django-pipeline.nix { };
  libsasscompiler = final.callPackage ./python/libsasscompiler.nix { };
  django-simple-csp = final.callPackage ./python/django-simple-csp.nix { };
  django-friendly-tag-loader = final.callPackage ./python/django-friendly-tag-loader.nix { };
  django-token-bucket = final.callPackage ./python/django-token-bucket.nix { };
  cryptojwt = prev.cryptojwt or (final.callPackage ./python/cryptojwt.nix { });
  simple-openid-connect =
    prev.simple-openid-connect or (final.callPackage ./python/simple-openid-connect.nix { });

  # From nixpkgs, with our expression only as a fallback for an older nixpkgs.
  django-markdownify = noCheck (
    prev.django-markdownify or (final.callPackage ./python/django-markdownify.nix { })
  );

  # From nixpkgs (rebuilt against the Django above).
  django-encrypted-model-fields = noCheck prev.django-encrypted-model-fields;
  django-widget-tweaks = noCheck prev.django-widget-tweaks;
  django-auth-ldap = noCheck prev.django-auth-ldap;
  sentry-sdk = noCheck prev.sentry-sdk;
}
