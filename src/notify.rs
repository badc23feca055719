//! sd_notify: tell systemd what the launcher is doing. A no-op when NOTIFY_SOCKET is unset
//! (started by hand, or as a container entrypoint); never fatal when it fails.
//!
//! The datagram is sent without blocking: the launcher's messages (STATUS, EXTEND_TIMEOUT)
//! are reports, and a notify socket whose reader has fallen behind (its queue is full)
//! must never stall the launcher, least of all while it supervises a migration. A report
//! that does not fit is dropped and logged at debug level; the next one follows soon.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use libsystemd::daemon::NotifyState;

fn send(states: &[NotifyState]) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = states
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let result = (|| -> std::io::Result<()> {
        let addr = match socket.as_encoded_bytes().strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&socket)?,
        };
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        sock.send_to_addr(message.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(err) = result {
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
