{
  description = "bitpoll-launcher: prepares, hardens and starts Bitpoll (Django) under systemd";

  inputs = {
    # The current stable NixOS release (supported until the end of 2026).
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    flake-utils.url = "github:numtide/flake-utils";

    # Upstream Bitpoll, pinned. Not a flake: only its source tree is used.
    # Its narHash is recorded in flake.lock by the first `nix flake lock`.
    bitpoll-src = {
      url = "github:fsinfuhh/Bitpoll/35b0236534fa181fd026436bd95fe7d0c60f37ba";
      flake = false;
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      flake-utils,
      bitpoll-src,
    }:
    let
      overlay = final: _prev: {
        bitpoll-launcher = final.callPackage ./nixos/pkgs/bitpoll-launcher.nix { };
        bitpoll = final.callPackage ./nixos/pkgs/bitpoll { src = bitpoll-src; };
        bitpoll-tryout = final.callPackage ./nixos/pkgs/bitpoll-tryout.nix { };
      };

      # The launcher is Linux-only (systemd, setresuid, capabilities).
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
    in
    flake-utils.lib.eachSystem systems (
      system:
      let
        pkgs = import nixpkgs {
          inherit system;
          overlays = [ overlay ];
        };
        inherit (pkgs) lib;
        launcher = pkgs.bitpoll-launcher;

        # Checks reuse the launcher derivation (same source set, vendored deps).
        cargoCheck =
          name: script:
          launcher.overrideAttrs (old: {
            pname = "bitpoll-launcher-${name}";
            nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ [
              pkgs.clippy
              pkgs.rustfmt
            ];
            buildPhase = ''
              runHook preBuild
              export HOME=$TMPDIR
              ${script}
              runHook postBuild
            '';
            doCheck = false;
            dontCargoInstall = true;
            installPhase = "touch $out";
            postInstall = "";
            dontFixup = true;
          });
      in
      {
        packages = {
          inherit (pkgs) bitpoll bitpoll-launcher bitpoll-tryout;
          default = pkgs.bitpoll-launcher;
        };

        apps = rec {
          bitpoll-launcher = {
            type = "app";
            program = lib.getExe pkgs.bitpoll-launcher;
            meta.description = "Run bitpoll-launcher (run, check, manage, unit, install, ...)";
          };
          # A try-out as the current user: http://127.0.0.1:8000, a throw-away data
          # directory under $TMPDIR, generated keys (scripts/tryout.sh).
          bitpoll-server = {
            type = "app";
            program = "${pkgs.bitpoll-tryout}/bin/bitpoll-server";
            meta.description = "Try Bitpoll as yourself on http://127.0.0.1:8000";
          };
          # `nix run .#bitpoll-manage -- createsuperuser`: manage.py against that try-out.
          bitpoll-manage = {
            type = "app";
            program = "${pkgs.bitpoll-tryout}/bin/bitpoll-manage";
            meta.description = "Run manage.py ARGS against the bitpoll-server try-out";
          };
          default = bitpoll-launcher;
        };

        devShells.default = pkgs.mkShell {
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            (pkgs.python3.withPackages (ps: [ ps.django ]))
            pkgs.gettext
            pkgs.systemd # systemd-analyze security / verify
            pkgs.nixfmt
          ];
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };

        formatter = pkgs.nixfmt;

        checks =
          {
            clippy = cargoCheck "clippy" ''
              cargo clippy --offline --workspace --all-targets -- -D warnings
            '';
            fmt = cargoCheck "fmt" ''
              cargo fmt --all -- --check
            '';
            # Every crate's unit tests (the kernel seams run against their recording
            # fakes; the few that need root say so and skip); the integration tests need
            # root, users and a booted systemd, which the build sandbox has not.
            tests = cargoCheck "tests" ''
              cargo test --offline --workspace --lib --bins
            '';
            inherit (pkgs) bitpoll bitpoll-launcher bitpoll-tryout;
            # The module evaluated in a NixOS configuration (secret overrides, migrate
            # only, /static/ from the package); no VM.
            module-eval = import ./nixos/tests/module-eval.nix { inherit pkgs self nixpkgs; };
          }
          // lib.optionalAttrs (system == "x86_64-linux") {
            vm = import ./nixos/tests/vm.nix { inherit pkgs self; };
          };
      }
    )
    // {
      overlays.default = overlay;

      # The module with this flake's packages as defaults (pinned nixpkgs).
      # To build them from the host's nixpkgs instead, add overlays.default
      # and set services.bitpoll.package = pkgs.bitpoll (and launcherPackage).
      nixosModules.bitpoll =
        { lib, pkgs, ... }:
        {
          imports = [ ./nixos/module.nix ];
          services.bitpoll = {
            package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.bitpoll;
            launcherPackage = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.bitpoll-launcher;
          };
        };
      nixosModules.default = self.nixosModules.bitpoll;
    };
}
