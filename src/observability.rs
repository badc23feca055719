//! Logging: tracing events go to journald with structured fields when stderr is connected
//! to the journal, and to stderr as readable text otherwise. A missing journald never
//! stops the launcher.
//!
//! The text carries outside words (the app's output during preparation, a server's
//! errors): tracing escapes ESC and the C1 controls in every value, and the writer here
//! escapes the other control characters (carriage return, the terminal's answer-back
//! request), so nothing logged can act on the terminal it is shown on.

use tracing_subscriber::Layer as _;
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
        .with_max_level(level)
        .init();
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
