# libsasscompiler: django-pipeline compiler that uses libsass (no Ruby, no Node).
{
  lib,
  buildPythonPackage,
  fetchPypi,
  setuptools,
  django-pipeline,
  libsass,
}:

buildPythonPackage rec {
  pname = "libsasscompiler";
  version = "0.2.1";
  pyproject = true;

  src = fetchPypi {
    inherit pname version;
    hash = "sha256-Go0NnXfCGjY8gHd+shkH606ws8AcXoAdS4Nr2Dpn7N4=";
  };

  build-system = [ setuptools ];

  dependencies = [
    django-pipeline
    libsass
  ];

  # setup.py pins exact versions from its requirements.txt; any compatible
  # django-pipeline/libsass from the package set will do.
  pythonRelaxDeps = true;

  # Importing the module touches django.conf.settings through pipeline, so an
  # import check needs a configured project; the bitpoll package's
  # installCheck runs collectstatic, which compiles Bitpoll's SCSS with it.
  doCheck = false;

  meta = {
    description = "django-pipeline SCSS/Sass compiler using libsass";
    homepage = "https://github.com/sonic182/libsasscompiler";
    license = lib.licenses.mit;
  };
}
