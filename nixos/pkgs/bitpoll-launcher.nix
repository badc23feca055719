# bitpoll-launcher: the privileged launcher (this repository's Rust workspace).
#
# Installs the binary (which compiles in nixos/hardening.toml for
# `bitpoll-launcher unit`), the same file as
# $out/share/bitpoll-launcher/hardening.toml, for `--hardening` and for
# anyone rendering a unit by other means, and the journal catalog
# (`bitpoll-launcher catalog`) as $out/lib/systemd/catalog/bitpoll-launcher.catalog.
{
  lib,
  rustPlatform,
}:

let
  root = ../..;
  fs = lib.fileset;
  cargoToml = lib.importTOML (root + "/Cargo.toml");
in
rustPlatform.buildRustPackage {
  pname = "bitpoll-launcher";
  inherit (cargoToml.workspace.package) version;

  # Only what cargo needs, so doc or Nix edits do not rebuild the binary.
  src = fs.toSource {
    inherit root;
    fileset = fs.unions [
      (root + "/Cargo.toml")
      (root + "/Cargo.lock")
      # The bundled SQLite's build flags (the cargo setup hook appends its own to it).
      (root + "/.cargo/config.toml")
      (root + "/src")
      (root + "/crates")
      (fs.maybeMissing (root + "/tests"))
      (fs.maybeMissing (root + "/benches"))
      (fs.maybeMissing (root + "/build.rs"))
      (fs.maybeMissing (root + "/clippy.toml"))
      (fs.maybeMissing (root + "/rustfmt.toml"))
      (root + "/nixos/hardening.toml")
      # crates/config embeds the [unit] table's defaults.
      (root + "/nixos/unit-defaults.toml")
    ];
  };

  cargoLock.lockFile = root + "/Cargo.lock";

  # The workspace's integration tests need root and a running systemd; the
  # pure crates are tested by the flake's `checks.tests`.
  doCheck = false;

  # The journal catalog, from the same rule table as the binary's records.
  postInstall = ''
    install -Dm0644 nixos/hardening.toml $out/share/bitpoll-launcher/hardening.toml
    mkdir -p $out/lib/systemd/catalog
    $out/bin/bitpoll-launcher catalog > $out/lib/systemd/catalog/bitpoll-launcher.catalog
  '';

  meta = {
    description = "Privileged launcher that prepares and starts Bitpoll under systemd";
    license = lib.licenses.mit;
    mainProgram = "bitpoll-launcher";
    platforms = lib.platforms.linux;
  };
}
