# services.bitpoll: Bitpoll started by bitpoll-launcher.
#
# The unit's ExecStart is `bitpoll-launcher run --config <launcher.toml>`. The
# launcher starts as root (inside the hardening of ./hardening.toml), checks
# the declared user, prepares the data directory, loads secrets (systemd
# credentials or generated once), runs migrate as the service user, drops
# every privilege and execs gunicorn, which keeps the main PID and reports
# READY=1 (Type=notify, NotifyAccess=main). Static files and translations are
# built into the package; nginx serves /static/ from the store.
#
# With services.bitpoll.unprivileged, systemd starts the launcher as the
# service user instead (User=, StateDirectory=, no capabilities), and with
# services.bitpoll.socket.enable a bitpoll.socket unit holds the listening
# socket across restarts.
#
# In the (default) privileged mode the data directory is created by tmpfiles
# and made writable with ReadWritePaths=, not StateDirectory=: for a unit
# without User= systemd
# chowns a StateDirectory tree back to root:root on every start whenever its
# top is owned by someone else, undoing the launcher's ownership (and making
# the SQLite database read-only for the service user, Bitpoll issue #199).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    mkEnableOption
    mkPackageOption
    mkOption
    mkIf
    mkDefault
    types
    literalExpression
    optional
    optionals
    optionalAttrs
    mapAttrs
    mapAttrsToList
    ;

  cfg = config.services.bitpoll;
  settingsFormat = pkgs.formats.toml { };

  # The one hardening list, shared with `bitpoll-launcher unit`: what both modes
  # share, and what the mode adds (services.bitpoll.unprivileged).
  hardeningFile = builtins.fromTOML (builtins.readFile ./hardening.toml);
  hardening =
    hardeningFile.Service
    // (if cfg.unprivileged then hardeningFile.Unprivileged else hardeningFile.Privileged);

  python = cfg.package.python;

  # host:port for gunicorn and nginx; IPv6 literals need brackets.
  hostPort =
    addr: port: if lib.hasInfix ":" addr then "[${addr}]:${toString port}" else "${addr}:${toString port}";
  bind = hostPort cfg.listenAddress cfg.port;

  # gunicorn >= 25.1 opens a control socket under $HOME by default; older
  # versions do not know the option and would exit.
  gunicornVersion = cfg.package.gunicornVersion or "0";
  controlSocketArgs = optionals (lib.versionAtLeast gunicornVersion "25.1") [ "--no-control-socket" ];

  configFile = settingsFormat.generate "bitpoll-launcher.toml" cfg.settings;

  # collectstatic's output, made when the package was built.
  staticDir = "${cfg.package}/share/bitpoll-static";

  # The secret files still read as credentials: a `settings.secrets.<VAR>` of the
  # admin's own replaces the credential, and then its file is not loaded.
  credentialFiles = lib.filterAttrs (
    name: _: (cfg.settings.secrets.${name} or null) == { credential = name; }
  ) cfg.secretFiles;

  # --- unprivileged and socket-activated modes, limits (docs/nixos.md) ---------------
  # The [unit] table's defaults, shared with the launcher (crates/config embeds the file),
  # and its directives, named and valued as `bitpoll-launcher unit` renders them.
  unitDefaults = builtins.fromTOML (builtins.readFile ./unit-defaults.toml);
  unitDirectives = import ./unit-directives.nix cfg.settings.unit;
  # StateDirectory= of the unprivileged unit: the data directory below /var/lib.
  stateDirectory = lib.removePrefix "/var/lib/" (toString cfg.dataDir);
  socketIsUnix = lib.hasPrefix "/" cfg.socket.listen;
  notifyAccess = if (cfg.settings.server.ready or "arbiter") == "worker" then "all" else "main";

  # The launcher's journal catalog and where journalctl looks for catalogs of local software.
  catalogFile = "${cfg.launcherPackage}/lib/systemd/catalog/bitpoll-launcher.catalog";
  catalogDir = "/usr/local/lib/systemd/catalog";

  nginxTls =
    let
      vhost = config.services.nginx.virtualHosts.${cfg.nginx.hostName} or { };
    in
    (vhost.forceSSL or false) || (vhost.onlySSL or false) || (vhost.addSSL or false);
in
{
  options.services.bitpoll = {
    enable = mkEnableOption "Bitpoll, a web application for polls and finding dates";

    package = mkPackageOption pkgs "bitpoll" {
      extraDescription = ''
        It must provide `share/bitpoll` (manage.py, the app, compiled
        translations, a settings_local.py reading BITPOLL_* variables),
        `share/bitpoll-static` (collectstatic's output, the app's STATIC_ROOT)
        and `passthru.python`, the interpreter environment with Django and
        gunicorn (`passthru.gunicornVersion` selects gunicorn options).
      '';
    };

    launcherPackage = mkPackageOption pkgs "bitpoll-launcher" { };

    user = mkOption {
      type = types.str;
      default = "bitpoll";
      description = "The unprivileged user the application runs as (declared by this module).";
    };

    group = mkOption {
      type = types.str;
      default = "bitpoll";
      description = "The service group (declared by this module).";
    };

    dataDir = mkOption {
      type = types.path;
      default = "/var/lib/bitpoll";
      description = ''
        Persistent state: the SQLite database, uploads (media/), generated
        secrets (secrets/, mode 0700) and the launcher's stamps (state/).
        Static files are not here: they are built into the package. Created by
        tmpfiles as
        `0750 user:group`; the launcher creates and checks the rest.
      '';
    };

    listenAddress = mkOption {
      type = types.str;
      default = "127.0.0.1";
      description = "Address gunicorn binds to. Keep it on loopback behind nginx.";
    };

    port = mkOption {
      type = types.port;
      default = 3008;
      description = "TCP port gunicorn binds to (above 1023: the server has no capabilities).";
    };

    workers = mkOption {
      type = types.ints.positive;
      default = 2;
      description = "Number of gunicorn worker processes.";
    };

    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = literalExpression ''
        {
          database = {
            engine = "postgresql";
            name = "bitpoll";
            user = "bitpoll";
          };
          prepare.stall_timeout_sec = 600;
        }
      '';
      description = ''
        The launcher's TOML configuration, written to `/etc/bitpoll/launcher.toml`
        and passed to `bitpoll-launcher run --config`. The module fills
        `service`, `app`, `prepare`, `secrets`, `environment` and `server` from
        the other options (each a default you can override here); `database`
        is left to the launcher's default (SQLite at `<dataDir>/db.sqlite3`)
        unless set. See docs/nixos.md for every key.
      '';
    };

    secretFiles = mkOption {
      # Strings, not paths: a path literal would be copied into the store.
      type = types.attrsOf types.str;
      default = { };
      example = literalExpression ''
        {
          BITPOLL_SECRET_KEY = "/run/keys/bitpoll-secret-key";
          BITPOLL_FIELD_ENCRYPTION_KEY = "/run/agenix/bitpoll-field-encryption-key";
          BITPOLL_DB_PASSWORD = "/run/keys/bitpoll-db-password";
        }
      '';
      description = ''
        Secrets as files outside the Nix store, by the environment variable the
        application reads. Each is handed to the unit with
        `LoadCredential=<VAR>:<path>` and referenced in the launcher config as
        `{ credential = "<VAR>"; }`, so the files may stay root-only (0400).
        That reference is a default: `settings.secrets.<VAR>` replaces it (and
        the file is then not loaded). BITPOLL_SECRET_KEY and
        BITPOLL_FIELD_ENCRYPTION_KEY given nowhere are generated once by the
        launcher into `<dataDir>/secrets/`.
        Keep the field encryption key: it encrypts stored CalDAV URLs.
      '';
    };

    environment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        BITPOLL_ALLOWED_HOSTS = "polls.example.org";
        BITPOLL_BASE_URL = "https://polls.example.org";
        BITPOLL_SECURE_COOKIES = "true";
        BITPOLL_LANGUAGE_CODE = "en-us";
        BITPOLL_TIME_ZONE = "Europe/Berlin";
      };
      description = ''
        Plain (non-secret) variables for the application, written to the
        launcher config's `[environment]`. With nginx enabled,
        BITPOLL_ALLOWED_HOSTS defaults to the virtual host name, and
        BITPOLL_BASE_URL / BITPOLL_SECURE_COOKIES follow its TLS setting.
      '';
    };

    nginx = {
      enable = mkEnableOption "an nginx virtual host proxying to gunicorn and serving /static/ from the package";

      hostName = mkOption {
        type = types.str;
        example = "polls.example.org";
        description = ''
          Name of the nginx virtual host. Add TLS on the same virtual host,
          e.g. `services.nginx.virtualHosts."''${hostName}".enableACME = true;`
          and `forceSSL = true;`.
        '';
      };
    };

    # --- unprivileged and socket-activated modes (docs/nixos.md) -----------------------
    unprivileged = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Start the launcher as {option}`services.bitpoll.user` (`User=`, `Group=`) with
        no capability at any time, `PrivateUsers=`, and the data directory created by
        systemd (`StateDirectory=`, so {option}`services.bitpoll.dataDir` must be below
        /var/lib). Secrets come from {option}`services.bitpoll.secretFiles` (credentials)
        or are generated. See docs/hardening.md for when to choose which mode.
      '';
    };

    socket = {
      enable = mkEnableOption ''
        socket activation: systemd holds the listening socket (bitpoll.socket) while the
        service restarts, prepares and migrates, so clients wait instead of being refused
      '';
      listen = mkOption {
        type = types.str;
        default = bind;
        defaultText = literalExpression ''"''${listenAddress}:''${toString port}"'';
        example = "/run/bitpoll/http.sock";
        description = ''
          `ListenStream=` of bitpoll.socket: HOST:PORT, or the path of a unix socket that
          nginx (a member of the service group) connects to.
        '';
      };
    };

    mail = {
      host = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "mail.example.org";
        description = ''
          SMTP server for the mails Bitpoll sends (registration, invitations, vote
          notifications): BITPOLL_EMAIL_HOST. Null: Django's default, a server on
          localhost, port 25.
        '';
      };
      port = mkOption {
        type = types.nullOr types.port;
        default = null;
        example = 587;
        description = "SMTP port (BITPOLL_EMAIL_PORT); null: 25, or 465 with `security = \"tls\"`.";
      };
      security = mkOption {
        type = types.enum [
          "none"
          "starttls"
          "tls"
        ];
        default = "none";
        description = ''
          `starttls`: plain connection upgraded with STARTTLS (BITPOLL_EMAIL_USE_TLS, usually
          port 587); `tls`: TLS from the start (BITPOLL_EMAIL_USE_SSL, usually port 465).
        '';
      };
      user = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "SMTP login (BITPOLL_EMAIL_HOST_USER).";
      };
      passwordFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/keys/bitpoll-mail-password";
        description = ''
          File holding the SMTP password, outside the store, root-only: delivered like
          {option}`services.bitpoll.secretFiles`.BITPOLL_EMAIL_HOST_PASSWORD.
        '';
      };
      from = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "Polls <polls@example.org>";
        description = "Sender of Bitpoll's mails (BITPOLL_DEFAULT_FROM_EMAIL).";
      };
    };

    ldap = {
      serverUri = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "ldaps://ldap.example.org";
        description = ''
          Log in with LDAP accounts besides the database's (BITPOLL_AUTH_LDAP_SERVER_URI).
          Null: no LDAP. Further keys (groups, attribute map, STARTTLS, a CA file) are
          BITPOLL_AUTH_LDAP_* variables in {option}`services.bitpoll.environment`
          (docs/settings.md).
        '';
      };
      bindDn = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "cn=bitpoll,ou=services,dc=example,dc=org";
        description = "DN to bind as for the user search (BITPOLL_AUTH_LDAP_BIND_DN); null: anonymous.";
      };
      bindPasswordFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          File holding the bind password, outside the store, root-only: delivered like
          {option}`services.bitpoll.secretFiles`.BITPOLL_AUTH_LDAP_BIND_PASSWORD.
        '';
      };
      userSearchBase = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "ou=People,dc=example,dc=org";
        description = "Where the users are (BITPOLL_AUTH_LDAP_USER_SEARCH_BASE).";
      };
      userSearchFilter = mkOption {
        type = types.str;
        default = "(uid=%(user)s)";
        description = "Filter that finds the user by the name typed at login (BITPOLL_AUTH_LDAP_USER_SEARCH_FILTER).";
      };
    };

    registration.enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Let visitors create accounts themselves (BITPOLL_REGISTER_ENABLED; the group pages
        follow it unless BITPOLL_GROUP_MANAGEMENT says otherwise). Off: accounts come
        from `manage createsuperuser`, the admin pages or LDAP.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open TCP 80 and 443 when nginx is enabled, otherwise the gunicorn
        {option}`services.bitpoll.port` (only useful with a non-loopback
        {option}`services.bitpoll.listenAddress`).
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.port > 1023;
        message = "services.bitpoll.port must be above 1023: gunicorn runs without CAP_NET_BIND_SERVICE.";
      }
      {
        assertion = !cfg.unprivileged || (lib.hasPrefix "/var/lib/" (toString cfg.dataDir) && !(lib.hasPrefix "private" stateDirectory));
        message = "services.bitpoll.unprivileged needs services.bitpoll.dataDir below /var/lib (systemd's StateDirectory=).";
      }
      {
        assertion = lib.all (p: lib.hasPrefix "/" p && !(lib.hasPrefix "${builtins.storeDir}/" p)) (
          builtins.attrValues cfg.secretFiles
        );
        message = "services.bitpoll.secretFiles must be absolute paths outside the Nix store (the store is world-readable).";
      }
      {
        assertion = cfg.ldap.serverUri == null || cfg.ldap.userSearchBase != null;
        message = "services.bitpoll.ldap.serverUri needs services.bitpoll.ldap.userSearchBase (or BITPOLL_AUTH_LDAP_USER_DN_TEMPLATE in services.bitpoll.environment).";
      }
      {
        assertion = lib.all (p: p == null || (lib.hasPrefix "/" p && !(lib.hasPrefix "${builtins.storeDir}/" p))) [
          cfg.mail.passwordFile
          cfg.ldap.bindPasswordFile
        ];
        message = "services.bitpoll.mail.passwordFile and ldap.bindPasswordFile must be absolute paths outside the Nix store.";
      }
    ];

    # Mail, LDAP and registration as the app's variables (docs/settings.md).
    services.bitpoll.secretFiles =
      optionalAttrs (cfg.mail.passwordFile != null) {
        BITPOLL_EMAIL_HOST_PASSWORD = mkDefault cfg.mail.passwordFile;
      }
      // optionalAttrs (cfg.ldap.bindPasswordFile != null) {
        BITPOLL_AUTH_LDAP_BIND_PASSWORD = mkDefault cfg.ldap.bindPasswordFile;
      };

    services.bitpoll.settings = {
      service = {
        user = mkDefault cfg.user;
        group = mkDefault cfg.group;
        # NixOS declares the user (below); the launcher only verifies it.
        create_user = mkDefault false;
        data_dir = mkDefault (toString cfg.dataDir);
      };
      app = {
        python = mkDefault "${python}/bin/python";
        source_dir = mkDefault "${cfg.package}/share/bitpoll";
        settings_module = mkDefault "bitpoll.settings";
      };
      prepare = {
        migrate = mkDefault true;
        # The package runs collectstatic and compilemessages when it is built (the
        # store is read-only): a start prepares by migrate alone.
        collectstatic = mkDefault false;
        compilemessages = mkDefault false;
        stall_timeout_sec = mkDefault 300;
      };
      secrets =
        mapAttrs (name: _: mkDefault { credential = name; }) cfg.secretFiles
        // optionalAttrs (!(cfg.secretFiles ? BITPOLL_SECRET_KEY)) {
          BITPOLL_SECRET_KEY = mkDefault { generate = "django-secret-key"; };
        }
        // optionalAttrs (!(cfg.secretFiles ? BITPOLL_FIELD_ENCRYPTION_KEY)) {
          BITPOLL_FIELD_ENCRYPTION_KEY = mkDefault { generate = "fernet-key"; };
        };
      environment = mapAttrs (_: mkDefault) cfg.environment;
      unit = mapAttrs (_: mkDefault) unitDefaults;
      server.command = mkDefault (
        [
          "${python}/bin/gunicorn"
          "--bind"
          bind
          "--workers"
          (toString cfg.workers)
        ]
        ++ controlSocketArgs
        ++ [
          "--preload"
          "bitpoll.wsgi:application"
        ]
      );
    };

    services.bitpoll.environment = lib.mkMerge [
      (mkIf cfg.nginx.enable {
        BITPOLL_ALLOWED_HOSTS = mkDefault cfg.nginx.hostName;
        BITPOLL_BASE_URL = mkDefault "${if nginxTls then "https" else "http"}://${cfg.nginx.hostName}";
        BITPOLL_SECURE_COOKIES = mkDefault (if nginxTls then "true" else "false");
      })
      {
        BITPOLL_REGISTER_ENABLED = mkDefault (if cfg.registration.enable then "true" else "false");
      }
      (lib.mapAttrs (_: mkDefault) (
        lib.filterAttrs (_: v: v != null) {
          BITPOLL_EMAIL_HOST = cfg.mail.host;
          BITPOLL_EMAIL_PORT = if cfg.mail.port == null then null else toString cfg.mail.port;
          BITPOLL_EMAIL_HOST_USER = cfg.mail.user;
          BITPOLL_DEFAULT_FROM_EMAIL = cfg.mail.from;
          BITPOLL_EMAIL_USE_TLS = if cfg.mail.security == "starttls" then "true" else null;
          BITPOLL_EMAIL_USE_SSL = if cfg.mail.security == "tls" then "true" else null;
          BITPOLL_AUTH_LDAP_SERVER_URI = cfg.ldap.serverUri;
          BITPOLL_AUTH_LDAP_BIND_DN = if cfg.ldap.serverUri == null then null else cfg.ldap.bindDn;
          BITPOLL_AUTH_LDAP_USER_SEARCH_BASE = if cfg.ldap.serverUri == null then null else cfg.ldap.userSearchBase;
          BITPOLL_AUTH_LDAP_USER_SEARCH_FILTER = if cfg.ldap.serverUri == null then null else cfg.ldap.userSearchFilter;
        }
      ))
    ];

    users.users.${cfg.user} = {
      isSystemUser = true;
      group = cfg.group;
      home = toString cfg.dataDir;
      description = "Bitpoll service user";
    };
    users.groups.${cfg.group} = { };

    systemd.tmpfiles.settings."10-bitpoll".${toString cfg.dataDir}.d = mkIf (!cfg.unprivileged) {
      inherit (cfg) user group;
      mode = "0750";
    };

    # For admins: `bitpoll-launcher check --config /etc/bitpoll/launcher.toml`
    # and `bitpoll-launcher manage --config /etc/bitpoll/launcher.toml -- ARGS`.
    environment.etc."bitpoll/launcher.toml".source = configFile;
    environment.systemPackages = [ cfg.launcherPackage ];

    systemd.services.bitpoll = {
      description = "Bitpoll (polls and date finding)";
      documentation = [ "https://github.com/fsinfuhh/Bitpoll" ];
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      requires = optional cfg.socket.enable "bitpoll.socket";
      after =
        [ "network-online.target" ]
        ++ optional config.services.postgresql.enable "postgresql.service"
        ++ optional cfg.socket.enable "bitpoll.socket";

      unitConfig = unitDirectives.unitConfig // {
        RequiresMountsFor = [ (toString cfg.dataDir) ];
      };

      serviceConfig = hardening // unitDirectives.serviceConfig // {
        Type = "notify";
        NotifyAccess = notifyAccess;
        ExecStart = "${lib.getExe cfg.launcherPackage} run --config ${configFile}";
        # gunicorn's output; the launcher's own records say bitpoll-launcher.
        SyslogIdentifier = "bitpoll";
        Restart = "on-failure";
        # Config invalid, system not as required, drop failed: restarting cannot help
        # and would hide the launcher's message from `systemctl status`.
        RestartPreventExitStatus = "2 3 4";
        # Migrations can take long; the launcher extends the timeout
        # (EXTEND_TIMEOUT_USEC) while they make progress and fails on a stall.
        TimeoutStartSec = "5min";
        LoadCredential = mapAttrsToList (name: path: "${name}:${toString path}") credentialFiles;
      }
      // (
        if cfg.unprivileged then
          {
            User = cfg.user;
            Group = cfg.group;
            StateDirectory = stateDirectory;
            StateDirectoryMode = "0750";
          }
        else
          { ReadWritePaths = [ (toString cfg.dataDir) ]; }
      );
    };

    # The journal catalog, so that `journalctl -x -u bitpoll` explains each refusal and
    # failure of the launcher under its record. NixOS's journalctl reads catalogs from its
    # own package and /usr/local/lib/systemd/catalog/ (not from /etc); the catalog is
    # linked there and the database rebuilt whenever the launcher's catalog changes.
    systemd.services.bitpoll-journal-catalog = {
      description = "The journal catalog of bitpoll-launcher (journalctl -x)";
      wantedBy = [ "multi-user.target" ];
      before = [ "bitpoll.service" ];
      restartTriggers = [ catalogFile ];
      path = [
        config.systemd.package
        pkgs.coreutils
      ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        mkdir -p ${catalogDir}
        ln -sfn ${catalogFile} ${catalogDir}/bitpoll-launcher.catalog
        journalctl --update-catalog
      '';
      preStop = ''
        rm -f ${catalogDir}/bitpoll-launcher.catalog
        journalctl --update-catalog
      '';
    };

    systemd.sockets.bitpoll = mkIf cfg.socket.enable {
      description = "Bitpoll's listening socket (held across restarts of bitpoll.service)";
      wantedBy = [ "sockets.target" ];
      listenStreams = [ cfg.socket.listen ];
      socketConfig =
        {
          Backlog = 1024;
        }
        // (
          if socketIsUnix then
            {
              # nginx connects to it (it is not in the service group on NixOS).
              SocketGroup = if cfg.nginx.enable then config.services.nginx.group else cfg.group;
              SocketMode = "0660";
              RemoveOnStop = true;
            }
          else
            { NoDelay = true; }
        );
    };

    services.nginx = mkIf cfg.nginx.enable {
      enable = true;
      virtualHosts.${cfg.nginx.hostName} = {
        locations."/" = {
          proxyPass = if cfg.socket.enable && socketIsUnix then "http://unix:${cfg.socket.listen}" else "http://${bind}";
          recommendedProxySettings = true;
        };
        # From the store: world-readable, so nginx needs no access to dataDir.
        locations."/static/" = {
          alias = "${staticDir}/";
          extraConfig = ''
            expires 7d;
            add_header Cache-Control "public";
          '';
        };
      };
    };

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall (
      if cfg.nginx.enable then
        [
          80
          443
        ]
      else
        [ cfg.port ]
    );
  };

  meta.maintainers = [ ];
}
