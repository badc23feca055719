//! Logging: tracing events go to journald with structured fields when stderr is connected
//! to the journal, and to stderr as readable text otherwise. A missing journald never
//! stops the launcher.

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
        .with_writer(std::io::stderr)
        .with_ansi(stderr_is_tty)
        .with_target(false)
        .with_max_level(level)
        .init();
}
