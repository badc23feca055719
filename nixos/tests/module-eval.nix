# Evaluates services.bitpoll in a NixOS configuration (no VM, nothing built) and
# checks what the module makes of the options: `settings.secrets.<VAR>` replaces
# the credential a `secretFiles` entry fills in (and that file is no longer
# loaded), a start prepares by migrate alone, nginx serves /static/ from the
# package without joining the service group; mail, LDAP and registration become
# the app's variables and their password files credentials.
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
          mail = {
            host = "mail.example.org";
            port = 587;
            security = "starttls";
            user = "polls@example.org";
            passwordFile = "/run/keys/bitpoll-mail-password";
            from = "Polls <polls@example.org>";
          };
          ldap = {
            serverUri = "ldaps://ldap.example.org";
            bindDn = "cn=bitpoll,ou=services,dc=example,dc=org";
            bindPasswordFile = "/run/keys/bitpoll-ldap-password";
            userSearchBase = "ou=People,dc=example,dc=org";
          };
          registration.enable = false;
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
      what = "only the credentials still used are loaded";
      ok =
        c.systemd.services.bitpoll.serviceConfig.LoadCredential == [
          "BITPOLL_AUTH_LDAP_BIND_PASSWORD:/run/keys/bitpoll-ldap-password"
          "BITPOLL_EMAIL_HOST_PASSWORD:/run/keys/bitpoll-mail-password"
          "BITPOLL_FIELD_ENCRYPTION_KEY:/run/keys/bitpoll-field-encryption-key"
        ];
    }
    {
      what = "the mail and LDAP passwords are credentials";
      ok =
        s.secrets.BITPOLL_EMAIL_HOST_PASSWORD == { credential = "BITPOLL_EMAIL_HOST_PASSWORD"; }
        && s.secrets.BITPOLL_AUTH_LDAP_BIND_PASSWORD == { credential = "BITPOLL_AUTH_LDAP_BIND_PASSWORD"; };
    }
    {
      what = "mail, LDAP and registration are the app's variables";
      ok =
        s.environment == {
          BITPOLL_ALLOWED_HOSTS = "polls.test";
          BITPOLL_BASE_URL = "http://polls.test";
          BITPOLL_SECURE_COOKIES = "false";
          BITPOLL_REGISTER_ENABLED = "false";
          BITPOLL_EMAIL_HOST = "mail.example.org";
          BITPOLL_EMAIL_PORT = "587";
          BITPOLL_EMAIL_HOST_USER = "polls@example.org";
          BITPOLL_DEFAULT_FROM_EMAIL = "Polls <polls@example.org>";
          BITPOLL_EMAIL_USE_TLS = "true";
          BITPOLL_AUTH_LDAP_SERVER_URI = "ldaps://ldap.example.org";
          BITPOLL_AUTH_LDAP_BIND_DN = "cn=bitpoll,ou=services,dc=example,dc=org";
          BITPOLL_AUTH_LDAP_USER_SEARCH_BASE = "ou=People,dc=example,dc=org";
          BITPOLL_AUTH_LDAP_USER_SEARCH_FILTER = "(uid=%(user)s)";
        };
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
