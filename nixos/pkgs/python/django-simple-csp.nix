# django-simple-csp: Content-Security-Policy middleware used by Bitpoll.
{
  lib,
  buildPythonPackage,
  fetchPypi,
  hatchling,
  django,
}:

buildPythonPackage rec {
  pname = "django-simple-csp";
  version = "0.5.dev1";
  pyproject = true;

  src = fetchPypi {
    pname = "django_simple_csp";
    inherit version;
    hash = "sha256-6jAuiCMDGJphc2yDJgt5WUyNjPepx2XRKv72Mg35qu0=";
  };

  build-system = [ hatchling ];

  dependencies = [ django ];

  # No tests in the sdist.
  doCheck = false;
  pythonImportsCheck = [ "django_simple_csp" ];

  meta = {
    description = "Django Content Security Policy support";
    homepage = "https://github.com/fsinfuhh/django-simple-csp";
    license = lib.licenses.mit;
  };
}
