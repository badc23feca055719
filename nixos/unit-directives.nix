# The launcher config's [unit] table as systemd directives, the same names and values
# `bitpoll-launcher unit` renders (crates/config/src/unit.rs, Unit::directives).
# Argument: the table with every key: nixos/unit-defaults.toml under the admin's
# settings.unit. tests/unit_file.rs evaluates this file against the launcher's output.
u:
let
  secs = v: "${toString v}s";
in
{
  unitConfig = {
    StartLimitIntervalSec = secs u.start_limit_interval_sec;
    StartLimitBurst = u.start_limit_burst;
  };
  serviceConfig =
    {
      RestartSec = secs u.restart_sec;
      MemoryHigh = toString u.memory_high;
      MemoryMax = toString u.memory_max;
      TasksMax = toString u.tasks_max;
      LimitNOFILE = u.limit_nofile;
    }
    # systemd 254 or later; rendered only when set.
    // (if u ? restart_steps then { RestartSteps = u.restart_steps; } else { })
    // (if u ? restart_max_delay_sec then { RestartMaxDelaySec = secs u.restart_max_delay_sec; } else { });
}
