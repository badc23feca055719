# django-markdownify: Markdown template filter. Only used when the nixpkgs in
# use has no python3Packages.django-markdownify (see ../python-packages.nix).
{
  lib,
  buildPythonPackage,
  fetchPypi,
  setuptools,
  django,
  markdown,
  bleach,
  tinycss2,
}:

buildPythonPackage rec {
  pname = "django-markdownify";
  version = "0.9.6";
  pyproject = true;

  src = fetchPypi {
    pname = "django_markdownify";
    inherit version;
    hash = "sha256-7c9HsgJtVahDkEnTXItU4RBmpIVsT60QYOE5yz0u7lI=";
  };

  build-system = [ setuptools ];

  dependencies = [
    django
    markdown
    bleach
    # bleach[css]
    tinycss2
  ];

  # The tests need a Django template setup.
  doCheck = false;
  pythonImportsCheck = [ "markdownify" ];

  meta = {
    description = "Markdown template filter for Django";
    homepage = "https://github.com/erwinmatijsen/django-markdownify";
    license = lib.licenses.mit;
  };
}
