# cryptojwt: JWT/JWS/JWE/JWK, needed by simple-openid-connect (OpenID login).
{
  lib,
  buildPythonPackage,
  fetchPypi,
  hatchling,
  cryptography,
  requests,
}:

buildPythonPackage rec {
  pname = "cryptojwt";
  version = "1.11.0";
  pyproject = true;

  src = fetchPypi {
    inherit pname version;
    hash = "sha256-UVo0XT+wkWBvKTg0c22acs/5MqAhoZYviovG3ANYz7A=";
  };

  # The version comes from uv-dynamic-versioning (git metadata, absent in the
  # sdist): make it static and build with plain hatchling.
  postPatch = ''
    substituteInPlace pyproject.toml \
      --replace-fail 'dynamic = ["version"]' 'version = "${version}"' \
      --replace-fail 'requires = ["hatchling", "uv-dynamic-versioning"]' 'requires = ["hatchling"]' \
      --replace-fail 'source = "uv-dynamic-versioning"' ""
    sed -i '/^\[tool\.hatch\.version\]$/d' pyproject.toml
  '';

  build-system = [ hatchling ];

  dependencies = [
    cryptography
    requests
  ];

  # The tests need network fixtures (responses) not worth pulling in here.
  doCheck = false;
  pythonImportsCheck = [ "cryptojwt" ];

  meta = {
    description = "JSON Web Token, Signature, Encryption and Key implementation";
    homepage = "https://github.com/IdentityPython/JWTConnect-Python-CryptoJWT";
    license = lib.licenses.asl20;
  };
}
