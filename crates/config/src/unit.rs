//! The `[unit]` table: resource limits and the restart policy of the systemd unit.
//!
//! The launcher itself does not act on these at run time; `bitpoll-launcher unit` renders
//! them into the unit it prints, and the NixOS module renders the same keys with
//! `nixos/unit-directives.nix`. Their defaults live in one file, `nixos/unit-defaults.toml`,
//! which this crate embeds and the module reads: a key the config leaves out takes its
//! value from there and is validated like one written by the admin.

use std::fmt;

use crate::reader::{Reader, Table};

/// The shared defaults, as shipped (see the module docs).
pub const DEFAULTS: &str = include_str!("../../../nixos/unit-defaults.toml");

pub(crate) const UNIT_KEYS: &[&str] = &[
    "memory_high",
    "memory_max",
    "tasks_max",
    "limit_nofile",
    "restart_sec",
    "restart_steps",
    "restart_max_delay_sec",
    "start_limit_interval_sec",
    "start_limit_burst",
];

/// Validated `[unit]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// `MemoryHigh=`: above it the kernel throttles and reclaims.
    pub memory_high: Limit,
    /// `MemoryMax=`: above it the kernel's OOM killer ends a process of the unit.
    pub memory_max: Limit,
    /// `TasksMax=`: processes and threads of the unit together.
    pub tasks_max: Limit,
    /// `LimitNOFILE=`: open files per process (soft and hard).
    pub limit_nofile: u64,
    /// `RestartSec=`: the wait before a restart (the first one, with restart_steps).
    pub restart_sec: u64,
    /// `RestartSteps=` (systemd 254 or later): restarts over which the wait grows from
    /// restart_sec to restart_max_delay_sec. None: not rendered.
    pub restart_steps: Option<u32>,
    /// `RestartMaxDelaySec=` (systemd 254 or later). None: not rendered.
    pub restart_max_delay_sec: Option<u64>,
    /// `StartLimitIntervalSec=` ([Unit]): the window in which starts are counted.
    pub start_limit_interval_sec: u64,
    /// `StartLimitBurst=` ([Unit]): starts allowed in that window; one more and the unit
    /// stays failed until `systemctl reset-failed` or a manual start after the window.
    pub start_limit_burst: u32,
}

/// A size or count limit as systemd writes it: a number (sizes with an optional K, M, G
/// or T suffix, base 1024), a percentage, or `infinity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    Infinity,
    /// A size in bytes, written with the largest exact K/M/G/T suffix.
    Bytes(u64),
    /// A number of tasks.
    Count(u64),
    /// Percent of physical memory (sizes) or of the system's task limit (tasks).
    Percent(u8),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Infinity => f.write_str("infinity"),
            Limit::Bytes(b) => {
                let (mut v, mut unit) = (*b, "");
                for u in ["K", "M", "G", "T"] {
                    if v % 1024 != 0 {
                        break;
                    }
                    v /= 1024;
                    unit = u;
                }
                write!(f, "{v}{unit}")
            }
            Limit::Count(v) => write!(f, "{v}"),
            Limit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Limit {
    /// A size limit from "1536M", "2G", "50%", "infinity" or a plain byte count.
    fn parse_size(s: &str) -> Option<Limit> {
        if let Some(l) = Self::parse_special(s) {
            return Some(l);
        }
        let (digits, factor) = match s.char_indices().last()? {
            (i, 'K') => (&s[..i], 1u64 << 10),
            (i, 'M') => (&s[..i], 1 << 20),
            (i, 'G') => (&s[..i], 1 << 30),
            (i, 'T') => (&s[..i], 1 << 40),
            _ => (s, 1),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        n.checked_mul(factor).filter(|v| *v > 0).map(Limit::Bytes)
    }

    /// A count limit from "512", "50%" or "infinity".
    fn parse_count(s: &str) -> Option<Limit> {
        if let Some(l) = Self::parse_special(s) {
            return Some(l);
        }
        s.parse::<u64>().ok().filter(|v| *v > 0).map(Limit::Count)
    }

    fn parse_special(s: &str) -> Option<Limit> {
        if s == "infinity" {
            return Some(Limit::Infinity);
        }
        let p = s.strip_suffix('%')?;
        p.parse::<u8>()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .map(Limit::Percent)
    }
}

/// The section of the unit file a directive belongs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Unit,
    Service,
}

/// One rendered directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub section: Section,
    pub name: &'static str,
    pub value: String,
}

impl Unit {
    /// The directives this table renders to, in a fixed order. The NixOS module's
    /// `nixos/unit-directives.nix` maps the same keys to the same names and values.
    pub fn directives(&self) -> Vec<Directive> {
        let d = |section, name, value: String| Directive {
            section,
            name,
            value,
        };
        let mut out = vec![
            d(
                Section::Unit,
                "StartLimitIntervalSec",
                format!("{}s", self.start_limit_interval_sec),
            ),
            d(
                Section::Unit,
                "StartLimitBurst",
                self.start_limit_burst.to_string(),
            ),
            d(
                Section::Service,
                "RestartSec",
                format!("{}s", self.restart_sec),
            ),
        ];
        if let Some(steps) = self.restart_steps {
            out.push(d(Section::Service, "RestartSteps", steps.to_string()));
        }
        if let Some(max) = self.restart_max_delay_sec {
            out.push(d(Section::Service, "RestartMaxDelaySec", format!("{max}s")));
        }
        out.extend([
            d(Section::Service, "MemoryHigh", self.memory_high.to_string()),
            d(Section::Service, "MemoryMax", self.memory_max.to_string()),
            d(Section::Service, "TasksMax", self.tasks_max.to_string()),
            d(
                Section::Service,
                "LimitNOFILE",
                self.limit_nofile.to_string(),
            ),
        ]);
        out
    }
}

/// The defaults table (parsed once per call; the file is a few hundred bytes).
fn defaults() -> Table {
    toml::from_str(DEFAULTS)
        .expect("nixos/unit-defaults.toml is valid TOML (a unit test checks it)")
}

/// Read `[unit]`: the admin's keys over the shared defaults.
pub(crate) fn read_unit(r: &mut Reader, t: Option<&Table>) -> Option<Unit> {
    let empty = Table::new();
    let t = t.unwrap_or(&empty);
    r.unknown_keys("unit", t, UNIT_KEYS);
    let mut merged = defaults();
    for (k, v) in t {
        if UNIT_KEYS.contains(&k.as_str()) {
            merged.insert(k.clone(), v.clone());
        }
    }
    let t = &merged;
    let memory_high = size(r, t, "memory_high");
    let memory_max = size(r, t, "memory_max");
    let tasks_max = count(r, t, "tasks_max");
    let limit_nofile = ranged(r, t, "limit_nofile", 64, 1 << 20);
    let restart_sec = ranged(r, t, "restart_sec", 0, 86_400);
    let restart_steps = optional(r, t, "restart_steps", 1, 1000).map(|o| o.map(|v| v as u32));
    let restart_max_delay_sec = optional(r, t, "restart_max_delay_sec", 1, 86_400);
    let start_limit_interval_sec = ranged(r, t, "start_limit_interval_sec", 0, 86_400 * 7);
    let start_limit_burst = ranged(r, t, "start_limit_burst", 1, 10_000).map(|v| v as u32);

    if let (Some(Limit::Bytes(high)), Some(Limit::Bytes(max))) = (&memory_high, &memory_max) {
        if high > max {
            r.problem(
                "unit.memory_high",
                format!("{high} bytes is above unit.memory_max ({max} bytes), so it would never apply"),
                Some("set memory_high below memory_max (throttling should start before the OOM killer)".into()),
            );
        }
    }
    match (restart_steps, restart_max_delay_sec, restart_sec) {
        (Some(Some(_)), Some(None), _) | (Some(None), Some(Some(_)), _) => r.problem(
            "unit",
            "restart_steps and restart_max_delay_sec go together",
            Some("set both (the wait grows from restart_sec to restart_max_delay_sec over restart_steps restarts) or neither".into()),
        ),
        (_, Some(Some(max)), Some(first)) if max <= first => r.problem(
            "unit.restart_max_delay_sec",
            format!("{max} is not above restart_sec ({first})"),
            Some("the longest wait must be longer than the first".into()),
        ),
        _ => {}
    }

    Some(Unit {
        memory_high: memory_high?,
        memory_max: memory_max?,
        tasks_max: tasks_max?,
        limit_nofile: limit_nofile?,
        restart_sec: restart_sec?,
        restart_steps: restart_steps?,
        restart_max_delay_sec: restart_max_delay_sec?,
        start_limit_interval_sec: start_limit_interval_sec?,
        start_limit_burst: start_limit_burst?,
    })
}

fn key(name: &str) -> String {
    format!("unit.{name}")
}

fn size(r: &mut Reader, t: &Table, name: &str) -> Option<Limit> {
    let parsed = match t.get(name) {
        Some(toml::Value::String(s)) => Limit::parse_size(s),
        Some(toml::Value::Integer(i)) => {
            u64::try_from(*i).ok().filter(|v| *v > 0).map(Limit::Bytes)
        }
        _ => None,
    };
    if parsed.is_none() {
        r.problem(
            key(name),
            format!("{} is not a memory size", shown(t.get(name))),
            Some(format!("write a size such as {name} = \"1G\" or \"1536M\", a percentage of RAM such as \"50%\", or \"infinity\"")),
        );
    }
    parsed
}

fn count(r: &mut Reader, t: &Table, name: &str) -> Option<Limit> {
    let parsed = match t.get(name) {
        Some(toml::Value::String(s)) => Limit::parse_count(s),
        Some(toml::Value::Integer(i)) => {
            u64::try_from(*i).ok().filter(|v| *v > 0).map(Limit::Count)
        }
        _ => None,
    };
    if parsed.is_none() {
        r.problem(
            key(name),
            format!("{} is not a task limit", shown(t.get(name))),
            Some(format!(
                "write a number such as {name} = 512, a percentage such as \"20%\", or \"infinity\""
            )),
        );
    }
    parsed
}

fn ranged(r: &mut Reader, t: &Table, name: &str, min: u64, max: u64) -> Option<u64> {
    match optional(r, t, name, min, max) {
        Some(Some(v)) => Some(v),
        Some(None) => {
            // Only reachable if the defaults file lost the key; a unit test guards it.
            r.problem(
                key(name),
                "is missing",
                Some(format!("add `{name} = ...` to [unit]")),
            );
            None
        }
        None => None,
    }
}

/// An integer in min..=max: Some(None) when absent, None (with a problem) when invalid.
fn optional(r: &mut Reader, t: &Table, name: &str, min: u64, max: u64) -> Option<Option<u64>> {
    match t.get(name) {
        None => Some(None),
        Some(toml::Value::Integer(i)) if (min as i128..=max as i128).contains(&(*i as i128)) => {
            Some(Some(*i as u64))
        }
        Some(toml::Value::Integer(i)) => {
            r.problem(
                key(name),
                format!("{i} is out of range"),
                Some(format!("use a whole number between {min} and {max}")),
            );
            None
        }
        Some(other) => {
            r.problem(
                key(name),
                format!(
                    "must be an integer, not {}",
                    crate::article(other.type_str())
                ),
                Some(format!("write the number without quotes: {name} = {min}")),
            );
            None
        }
    }
}

fn shown(v: Option<&toml::Value>) -> String {
    match v {
        Some(toml::Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
        None => "nothing".into(),
    }
}
