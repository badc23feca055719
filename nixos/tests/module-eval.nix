# Evaluates services.bitpoll in a NixOS configuration (no VM, nothing built) and
# checks what the module makes of the options: `settings.secrets.<VAR>` replaces
# the credential a `secretFiles` entry fills in (and that file is no longer
# loaded), a start prepares by migrate alone, nginx serves /static/ from the
# package without joining the service group.
#
# Part of `nix flake check`; a failed expectation stops the evaluation with its
# description.
{
  pkgs,
  self,
  nixpkgs,
}:

let
  inherit (pkgs) lib;
  eval = nixpkgs.lib.nixosSystem {
    modules = [
      self.nixosModules.default
      {
        nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
        boot.loader.grub.enable = false;
        fileSystems."/" = {
          device = "none";
          fsType = "tmpfs";
        };
        system.stateVersion = "26.05";
        services.bitpoll = {
          enable = true;
          nginx = {
            enable = true;
            hostName = "polls.test";
          };
          secretFiles = {
            BITPOLL_SECRET_KEY = "/run/keys/bitpoll-secret-key";
            BITPOLL_FIELD_ENCRYPTION_KEY = "/run/keys/bitpoll-field-encryption-key";
          };
          settings.secrets.BITPOLL_SECRET_KEY.file = "/etc/bitpoll/secret-key";
        };
      }
    ];
  };
  c = eval.config;
  s = c.services.bitpoll.settings;
  expectations = [
    {
      what = "settings.secrets.BITPOLL_SECRET_KEY replaces the credential from secretFiles";
      ok = s.secrets.BITPOLL_SECRET_KEY == { file = "/etc/bitpoll/secret-key"; };
    }
    {
      what = "a secretFiles entry not replaced stays a credential";
      ok = s.secrets.BITPOLL_FIELD_ENCRYPTION_KEY == { credential = "BITPOLL_FIELD_ENCRYPTION_KEY"; };
    }
    {
      what = "the launcher's journal catalog is put where journalctl reads it";
      ok =
        lib.hasInfix "/usr/local/lib/systemd/catalog/bitpoll-launcher.catalog"
          c.systemd.services.bitpoll-journal-catalog.script
        && lib.hasInfix "journalctl --update-catalog" c.systemd.services.bitpoll-journal-catalog.script;
    }
    {
      what = "only the credential still used is loaded";
      ok =
        c.systemd.services.bitpoll.serviceConfig.LoadCredential == [
          "BITPOLL_FIELD_ENCRYPTION_KEY:/run/keys/bitpoll-field-encryption-key"
        ];
    }
    {
      what = "a start prepares by migrate alone";
      ok =
        s.prepare == {
          migrate = true;
          collectstatic = false;
          compilemessages = false;
          stall_timeout_sec = 300;
        };
    }
    {
      what = "nginx serves /static/ from the package";
      ok =
        c.services.nginx.virtualHosts."polls.test".locations."/static/".alias
        == "${c.services.bitpoll.package}/share/bitpoll-static/";
    }
    {
      what = "nginx is not in the service group";
      ok = !(lib.elem "bitpoll" c.users.users.${c.services.nginx.user}.extraGroups);
    }
  ];
  failed = lib.filter (e: !e.ok) expectations;
in
if failed == [ ] then
  pkgs.writeText "bitpoll-module-eval" (lib.concatMapStrings (e: "ok: ${e.what}\n") expectations)
else
  throw "services.bitpoll module evaluation failed: ${lib.concatMapStringsSep "; " (e: e.what) failed}"
