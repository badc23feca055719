# `nix run .#bitpoll-server` and `nix run .#bitpoll-manage -- ARGS`: Bitpoll as the
# current user on 127.0.0.1:8000, with a throw-away data directory and generated keys
# (the launcher's non-root mode). Both run ../../scripts/tryout.sh, the same script a
# try-out without Nix uses (docs/nixos.md, "Try it out"), with this flake's packages;
# static files and catalogs are built into the package.
{
  lib,
  writeShellApplication,
  symlinkJoin,
  bash,
  coreutils,
  gnugrep,
  gnused,
  bitpoll,
  bitpoll-launcher,
}:

let
  script = ../../scripts/tryout.sh;
  app =
    name: command:
    writeShellApplication {
      inherit name;
      runtimeInputs = [
        coreutils
        gnugrep
        gnused
      ];
      text = ''
        export BITPOLL_TRYOUT_LAUNCHER=${lib.getExe bitpoll-launcher}
        export BITPOLL_TRYOUT_PYTHON=${bitpoll.python}/bin/python
        export BITPOLL_TRYOUT_SOURCE=${bitpoll}/share/bitpoll
        export BITPOLL_TRYOUT_PREBUILT=1
        exec ${lib.getExe bash} ${script} ${command} "$@"
      '';
    };
in
symlinkJoin {
  name = "bitpoll-tryout";
  paths = [
    (app "bitpoll-server" "server")
    (app "bitpoll-manage" "manage")
  ];
  meta = {
    description = "Try Bitpoll as the current user on 127.0.0.1 (bitpoll-server, bitpoll-manage)";
    mainProgram = "bitpoll-server";
    platforms = lib.platforms.linux;
  };
}
