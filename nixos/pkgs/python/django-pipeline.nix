# django-pipeline: asset packaging for Django (Bitpoll's CSS/JS bundles).
# nixpkgs has none (its old 1.6 expression was marked broken and removed).
{
  lib,
  buildPythonPackage,
  fetchPypi,
  setuptools,
  setuptools-scm,
  django,
}:

buildPythonPackage rec {
  pname = "django-pipeline";
  version = "3.1.0";
  pyproject = true;

  src = fetchPypi {
    pname = "django_pipeline";
    inherit version;
    hash = "sha256-NkcK7O1IiWlLiZqZW80u2lEvRbYaxo1QrcWGPIutXuQ=";
  };

  build-system = [
    setuptools
    setuptools-scm
  ];

  dependencies = [ django ];

  # The test suite needs a configured Django project and Node-based compressors.
  doCheck = false;
  pythonImportsCheck = [ "pipeline" ];

  meta = {
    description = "Asset packaging library for Django";
    homepage = "https://github.com/jazzband/django-pipeline";
    license = lib.licenses.mit;
  };
}
