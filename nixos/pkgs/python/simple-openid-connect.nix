# simple-openid-connect: OpenID Connect relying party with a Django integration.
# Only in the environment when the bitpoll package is built withOpenID = true.
{
  lib,
  buildPythonPackage,
  fetchPypi,
  flit-core,
  cryptojwt,
  furl,
  pydantic,
  requests,
  django,
}:

buildPythonPackage rec {
  pname = "simple-openid-connect";
  version = "2.4.0";
  pyproject = true;

  src = fetchPypi {
    pname = "simple_openid_connect";
    inherit version;
    hash = "sha256-EHcxnJR/Vo4I0dB4jrSA5WIFVklQ5LSJUbhQ9mwHO4k=";
  };

  build-system = [ flit-core ];

  dependencies = [
    cryptojwt
    furl
    pydantic
    requests
    # the [django] extra
    django
  ];

  # Upper bounds (~=) are stricter than needed for the nixpkgs versions.
  pythonRelaxDeps = [
    "cryptojwt"
    "furl"
    "pydantic"
    "requests"
  ];

  # The tests talk to a live identity provider.
  doCheck = false;
  pythonImportsCheck = [ "simple_openid_connect" ];

  meta = {
    description = "Simple and opinionated OpenID Connect relying party implementation";
    homepage = "https://github.com/fsinfuhh/py_simple_openid_connect";
    license = lib.licenses.mit;
  };
}
