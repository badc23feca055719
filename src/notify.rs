//! sd_notify: tell systemd what the launcher is doing. A no-op when NOTIFY_SOCKET is unset
//! (started by hand, or as a container entrypoint); never fatal when it fails.

use std::time::Duration;

use libsystemd::daemon::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(err) = libsystemd::daemon::notify(false, states) {
        tracing::debug!(%err, "sd_notify failed");
    }
}

/// STATUS=<text>, shown by `systemctl status`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text.to_string())]);
}

/// EXTEND_TIMEOUT_USEC: ask systemd to allow at least `by` more time from now for the
/// start to complete.
pub fn extend_timeout(by: Duration) {
    send(&[NotifyState::Other(format!(
        "EXTEND_TIMEOUT_USEC={}",
        by.as_micros()
    ))]);
}
