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

use std::fmt::Write as _;
use std::sync::{LazyLock, RwLock};

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

static ZONE: LazyLock<RwLock<jiff::tz::TimeZone>> =
    LazyLock::new(|| RwLock::new(zone_named(DEFAULT_TIME_ZONE)));

/// The zone `name`, or UTC when the zone database does not know it (every line says its
/// offset, so the time stays unambiguous).
fn zone_named(name: &str) -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get(name).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// The text log's zone from here on: the app's, as `cfg` sets it.
pub fn use_app_zone(cfg: &launcher_config::Config) {
    let zone = zone_named(launcher_plan::env::time_zone(cfg));
    if let Ok(mut z) = ZONE.write() {
        *z = zone;
    }
}

/// `2026-01-05T14:03:07.123+01:00`: the time in the app's zone with its offset.
pub fn app_time(at: jiff::Timestamp) -> String {
    let zone = ZONE
        .read()
        .map(|z| z.clone())
        .unwrap_or(jiff::tz::TimeZone::UTC);
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
}
