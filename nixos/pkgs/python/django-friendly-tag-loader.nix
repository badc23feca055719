# django-friendly-tag-loader: optional template tag libraries ({% load_lib %}).
{
  lib,
  buildPythonPackage,
  fetchPypi,
  setuptools,
  django,
}:

buildPythonPackage rec {
  pname = "django-friendly-tag-loader";
  version = "1.3.2";
  pyproject = true;

  src = fetchPypi {
    pname = "django_friendly_tag_loader";
    inherit version;
    hash = "sha256-Nt4EC6jECLDm0fpX/4m0rxqpgGqvHPuqZzhhc3+0D3g=";
  };

  build-system = [ setuptools ];

  dependencies = [ django ];

  # The tests need a Django test project; the bitpoll installCheck loads it.
  doCheck = false;
  pythonImportsCheck = [ "friendlytagloader" ];

  meta = {
    description = "Optionally use a Django template tag library";
    homepage = "https://github.com/ataylor32/django-friendly-tag-loader";
    license = lib.licenses.mit;
  };
}
