# django-token-bucket: database-backed rate limiting (Bitpoll comments, CalDAV).
{
  lib,
  buildPythonPackage,
  fetchPypi,
  setuptools,
  django,
}:

buildPythonPackage rec {
  pname = "django-token-bucket";
  version = "0.2.4";
  pyproject = true;

  src = fetchPypi {
    pname = "django_token_bucket";
    inherit version;
    hash = "sha256-hkj4Vo2OXI0IR/T6/qzt5ZPPLCFJNnNWyEm9hkervCQ=";
  };

  build-system = [ setuptools ];

  dependencies = [ django ];

  # No tests in the sdist.
  doCheck = false;
  pythonImportsCheck = [ "django_token_bucket" ];

  meta = {
    description = "Token bucket rate limiting for Django";
    homepage = "https://github.com/fsinfuhh/django-token-bucket";
    license = lib.licenses.mit;
  };
}
