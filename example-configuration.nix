# Example NixOS host: Bitpoll at https://polls.example.org behind nginx, TLS
# certificates from Let's Encrypt (ACME), secrets read from root-only files.
#
# Use it from the host's flake:
#
#   inputs.bitpoll-launcher.url = "<this repository>";
#   outputs = { nixpkgs, bitpoll-launcher, ... }: {
#     nixosConfigurations.polls = nixpkgs.lib.nixosSystem {
#       system = "x86_64-linux";
#       modules = [
#         bitpoll-launcher.nixosModules.default
#         ./hardware-configuration.nix
#         ./example-configuration.nix
#       ];
#     };
#   };
#
# The secret files are not in the store and not in this repository. Create
# them once on the host (or let agenix/sops-nix place them, e.g. under
# /run/agenix/), root-owned and mode 0400; systemd hands them to the service
# as credentials:
#
#   install -d -m 0700 /var/lib/secrets/bitpoll
#   head -c 48 /dev/urandom | base64 > /var/lib/secrets/bitpoll/secret-key
#   python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())' \
#     > /var/lib/secrets/bitpoll/field-encryption-key
#   chmod 0400 /var/lib/secrets/bitpoll/*
#
# Back up field-encryption-key together with the database: it encrypts the
# stored CalDAV URLs, and a new key cannot read them.
{ ... }:

let
  hostName = "polls.example.org";
in
{
  networking.hostName = "polls";

  services.bitpoll = {
    enable = true;

    # gunicorn on loopback; nginx is the only way in.
    listenAddress = "127.0.0.1";
    port = 3008;
    workers = 3;

    nginx = {
      enable = true;
      inherit hostName;
    };
    # TCP 80 (ACME challenges, redirect) and 443.
    openFirewall = true;

    secretFiles = {
      BITPOLL_SECRET_KEY = "/var/lib/secrets/bitpoll/secret-key";
      BITPOLL_FIELD_ENCRYPTION_KEY = "/var/lib/secrets/bitpoll/field-encryption-key";
    };

    # BITPOLL_ALLOWED_HOSTS, BITPOLL_BASE_URL and BITPOLL_SECURE_COOKIES
    # follow the nginx virtual host (name, TLS) unless set here.
    environment = {
      BITPOLL_SITE_NAME = "Example Polls";
      BITPOLL_LANGUAGE_CODE = "en-us";
      BITPOLL_TIME_ZONE = "Europe/Berlin";
    };

    # Long migrations after an upgrade: fail only after 10 minutes without output.
    settings.prepare.stall_timeout_sec = 600;

    # PostgreSQL over the local socket with peer authentication instead of
    # SQLite (uncomment together with services.postgresql below):
    # settings.database = {
    #   engine = "postgresql";
    #   name = "bitpoll";
    #   user = "bitpoll";
    # };
  };

  # services.postgresql = {
  #   enable = true;
  #   ensureDatabases = [ "bitpoll" ];
  #   ensureUsers = [
  #     {
  #       name = "bitpoll";
  #       ensureDBOwnership = true;
  #     }
  #   ];
  # };

  services.nginx = {
    recommendedTlsSettings = true;
    recommendedOptimisation = true;
    recommendedGzipSettings = true;
    virtualHosts.${hostName} = {
      enableACME = true;
      forceSSL = true;
    };
  };

  security.acme = {
    acceptTerms = true;
    defaults.email = "hostmaster@example.org";
  };

  # Bitpoll sends mail (registration, invitations) through SMTP on
  # localhost:25 by default; run a relay there or leave registration off.

  system.stateVersion = "26.05";
}
