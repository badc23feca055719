//! Logging: tracing events go to journald with structured fields when stderr is connected
//! to the journal, and to stderr as readable text otherwise. A missing journald never
//! stops the launcher.
//!
//! The text log tells the time in the app's zone, so that its lines and the server's
//! (gunicorn's, in TZ and then Django's TIME_ZONE) read on one clock: the zone of
//! `BITPOLL_TIME_ZONE` in the config's `[environment]` (the variable Bitpoll's settings
//! read), else Bitpoll's default, Europe/Berlin (launcher_plan::env::time_zone, which the
//! app also gets as TZ); every line carries its UTC offset. The journal keeps its own
//! timestamps. The `message_id` field (journal MESSAGE_ID) is left out of the text: the
//! finding id says the same in words.
//!
//! The text carries outside words (the app's output during preparation, a server's
//! errors): tracing escapes ESC and the C1 controls in every value, and the writer here
//! escapes the other control characters (carriage return, the terminal's answer-back
//! request), so nothing logged can act on the terminal it is shown on.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Mutex;

use launcher_plan::env::DEFAULT_TIME_ZONE;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer as _;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub const SYSLOG_IDENTIFIER: &str = "bitpoll-launcher";

pub fn init(level: crate::cli::LogLevel) {
    let level = tracing_subscriber::filter::LevelFilter::from_level(level.into());
    if libsystemd::logging::connected_to_journal() {
        if let Ok(layer) = tracing_journald::layer() {
            // Field names become journal fields as they are (PHASE, STEP, DURATION_MS...).
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier(SYSLOG_IDENTIFIER.to_string());
            tracing_subscriber::registry()
                .with(layer.with_filter(level))
                .init();
            return;
        }
    }
    let stderr_is_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(|| Printable(std::io::stderr()))
        .with_ansi(stderr_is_tty)
        .with_target(false)
        .with_timer(AppClock)
        .fmt_fields(TextFields)
        .with_max_level(level)
        .init();
}

/// The text log's zone: its name until the first line is written, then the zone read
/// once. Under journald no line is formatted here and no zone is ever read.
enum Zone {
    Named(Cow<'static, str>),
    Loaded(jiff::tz::TimeZone),
}

static ZONE: Mutex<Zone> = Mutex::new(Zone::Named(Cow::Borrowed(DEFAULT_TIME_ZONE)));

/// Where the system's zone database may be, after `TZDIR`: Debian and most distributions,
/// then NixOS (whose units also get TZDIR) and older layouts.
const ZONEINFO_DIRS: [&str; 3] = [
    "/usr/share/zoneinfo",
    "/etc/zoneinfo",
    "/usr/share/lib/zoneinfo",
];
/// Larger than any TZif file of the database (the largest are a few KiB).
const MAX_TZIF: u64 = 256 * 1024;

/// The zone `name`, or UTC when no zone database knows it (every line says its offset,
/// so the time stays unambiguous).
///
/// The one file `DIR/name` is read from the system's database, else the copy built into
/// the launcher (a container image without tzdata). The database is not opened as a
/// whole: jiff's lists every file of the directory on first use, 3.4 of a warm start's
/// 17.6 million instructions (docs/benchmarks.md, runs 3 and 4).
fn zone_named(name: &str) -> jiff::tz::TimeZone {
    let tzdir = std::env::var_os("TZDIR").map(std::path::PathBuf::from);
    let dirs = tzdir
        .into_iter()
        .filter(|d| d.is_absolute())
        .chain(ZONEINFO_DIRS.iter().map(std::path::PathBuf::from));
    zone_from(name, dirs)
}

/// The zone `name` from the first of `dirs` that has it, else the built-in copy, else UTC.
fn zone_from(name: &str, dirs: impl IntoIterator<Item = std::path::PathBuf>) -> jiff::tz::TimeZone {
    if name == "UTC" {
        return jiff::tz::TimeZone::UTC;
    }
    let plausible = !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    if !plausible {
        return jiff::tz::TimeZone::UTC;
    }
    dirs.into_iter()
        .find_map(|dir| {
            let data = read_tzif(&dir.join(name))?;
            jiff::tz::TimeZone::tzif(name, &data).ok()
        })
        .or_else(|| jiff::tz::TimeZoneDatabase::bundled().get(name).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC)
}

/// A TZif file's bytes: a regular file (links followed, as the databases use them), never
/// waiting on a FIFO, at most MAX_TZIF bytes (std opens it close-on-exec).
fn read_tzif(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut data = Vec::new();
    file.take(MAX_TZIF + 1).read_to_end(&mut data).ok()?;
    (data.len() as u64 <= MAX_TZIF).then_some(data)
}

/// The text log's zone from here on: the app's, as `cfg` sets it.
pub fn use_app_zone(cfg: &launcher_config::Config) {
    let name = launcher_plan::env::time_zone(cfg);
    if let Ok(mut zone) = ZONE.lock() {
        let same = match &*zone {
            Zone::Named(n) => n == name,
            Zone::Loaded(z) => z.iana_name() == Some(name),
        };
        if !same {
            *zone = Zone::Named(Cow::Owned(name.to_owned()));
        }
    }
}

/// `2026-01-05T14:03:07.123+01:00`: the time in the app's zone with its offset.
pub fn app_time(at: jiff::Timestamp) -> String {
    let zone = match ZONE.lock() {
        Ok(mut zone) => {
            let loaded = match &*zone {
                Zone::Loaded(z) => z.clone(),
                Zone::Named(n) => zone_named(n),
            };
            *zone = Zone::Loaded(loaded.clone());
            loaded
        }
        Err(_) => jiff::tz::TimeZone::UTC,
    };
    at.to_zoned_datetime(zone)
        .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

/// The text log's clock (see the module documentation).
struct AppClock;

impl FormatTime for AppClock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str(&app_time(jiff::Timestamp::now()))
    }
}

/// The fields of a text line: the message, then `name=value` for every field but the
/// journal's MESSAGE_ID.
struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut v = TextVisitor::default();
        fields.record(&mut v);
        writer.write_str(&v.message)?;
        if !v.message.is_empty() && !v.fields.is_empty() {
            writer.write_char(' ')?;
        }
        writer.write_str(&v.fields)
    }
}

#[derive(Default)]
struct TextVisitor {
    message: String,
    fields: String,
}

impl Visit for TextVisitor {
    /// Every value is outside text (the app's output, a server's errors): its control
    /// characters, ESC and the C1 controls among them, are escaped here, so the only
    /// escape sequences the writer lets through are the formatter's own colours.
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let text = launcher_plan::text::printable_lines(&text);
        match field.name() {
            "message" => self.message.push_str(&text),
            "message_id" => {}
            name => {
                if !self.fields.is_empty() {
                    self.fields.push(' ');
                }
                let _ = write!(self.fields, "{name}={text}");
            }
        }
    }
}

/// A writer that escapes control characters except newlines and the formatter's own
/// colour sequences (launcher_plan::text::printable_styled). The formatter writes each
/// event whole, so a character is never split between two writes.
struct Printable<W>(W);

impl<W: std::io::Write> std::io::Write for Printable<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0
            .write_all(launcher_plan::text::printable_styled(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_shown_with_its_control_characters_escaped() {
        let mut v = TextVisitor::default();
        let fields = tracing::field::FieldSet::new(
            &["message", "message_id", "step"],
            tracing::callsite::Identifier(&CALLSITE),
        );
        let mut it = fields.iter();
        let (m, id, step) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        v.record_debug(
            &m,
            &format_args!("migrating\u{1b}]0;pwned\u{7}\u{9b}2J done"),
        );
        v.record_debug(&id, &"0123");
        v.record_str(&step, "a\u{1b}[2Kb");
        assert_eq!(v.message, "migrating\\x1b]0;pwned\\x07\\u{9b}2J done");
        // A str's Debug form escapes its controls itself.
        assert_eq!(v.fields, "step=\"a\\u{1b}[2Kb\"");
    }

    static CALLSITE: TestCallsite = TestCallsite;
    struct TestCallsite;
    impl tracing::callsite::Callsite for TestCallsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("not registered")
        }
    }

    #[test]
    fn the_text_clock_is_the_app_zone_with_its_offset() {
        let cfg = |zone: Option<&str>| {
            let env = zone
                .map(|z| {
                    format!(
                        "[environment]\n{} = \"{z}\"\n",
                        launcher_plan::env::TIME_ZONE_VAR
                    )
                })
                .unwrap_or_default();
            launcher_config::parse_str(&format!(
                "[service]\nuser = \"bitpoll\"\ndata_dir = \"/var/lib/bitpoll\"\n[app]\npython = \"/v/bin/python\"\nsource_dir = \"/s\"\n[secrets]\nBITPOLL_SECRET_KEY = {{ generate = \"django-secret-key\" }}\nBITPOLL_FIELD_ENCRYPTION_KEY = {{ generate = \"fernet-key\" }}\n[server]\ncommand = [\"/v/bin/gunicorn\"]\n{env}"
            ))
            .unwrap()
        };
        // 2026-01-05 13:03:07.5 UTC: winter in Berlin (+01:00), summer in Sydney.
        let at: jiff::Timestamp = "2026-01-05T13:03:07.5Z".parse().unwrap();
        use_app_zone(&cfg(None));
        assert_eq!(app_time(at), "2026-01-05T14:03:07.500+01:00");
        use_app_zone(&cfg(Some("Australia/Sydney")));
        assert_eq!(app_time(at), "2026-01-06T00:03:07.500+11:00");
        use_app_zone(&cfg(Some("UTC")));
        assert_eq!(app_time(at), "2026-01-05T13:03:07.500+00:00");
        // A zone no database knows: UTC, and the line says so.
        use_app_zone(&cfg(Some("Mars/Olympus_Mons")));
        assert_eq!(app_time(at), "2026-01-05T13:03:07.500+00:00");
        use_app_zone(&cfg(None));
    }

    #[test]
    fn a_zone_missing_from_the_system_comes_from_the_built_in_copy_and_a_fifo_never_blocks() {
        let at: jiff::Timestamp = "2026-07-05T13:03:07.5Z".parse().unwrap();
        let offset = |z: jiff::tz::TimeZone| at.to_zoned_datetime(z).offset().seconds();
        let dir = std::env::temp_dir().join(format!("blt-zoneinfo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("Europe")).unwrap();
        // An empty system directory: the built-in copy knows Berlin's summer time.
        assert_eq!(offset(zone_from("Europe/Berlin", [dir.clone()])), 7200);
        // A FIFO where the file should be is passed over at once, not waited on.
        nix::unistd::mkfifo(
            &dir.join("Europe/Berlin"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert_eq!(offset(zone_from("Europe/Berlin", [dir.clone()])), 7200);
        // The system's file wins over the built-in copy: here a file of a zone at +09:00
        // all year (TZif version 1: no transitions, one local time type "JST").
        let mut tzif = b"TZif".to_vec();
        tzif.extend([0u8; 16]);
        for count in [0u32, 0, 0, 0, 1, 4] {
            tzif.extend(count.to_be_bytes());
        }
        tzif.extend(32400i32.to_be_bytes());
        tzif.extend([0, 0]);
        tzif.extend(b"JST\0");
        std::fs::write(dir.join("Europe/Paris"), &tzif).unwrap();
        assert_eq!(offset(zone_from("Europe/Paris", [dir.clone()])), 9 * 3600);
        // Names that leave the directory are not looked up at all.
        for name in [
            "../Europe/Berlin",
            "/etc/localtime",
            "Europe//Berlin",
            "Europe/./Berlin",
            "",
        ] {
            assert_eq!(offset(zone_from(name, [dir.join("Europe")])), 0, "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
