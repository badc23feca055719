//! The stop signals (SIGTERM, SIGINT, SIGHUP, SIGQUIT), caught by `run` from its first
//! step until just before the exec of the server.
//!
//! Catching them from the start matters twice: a stop request during a long wait (for
//! PostgreSQL, for another instance's migration, for a preparation step) must end that
//! wait at once and cleanly, and as a container's PID 1 the launcher would otherwise never
//! see them (the kernel drops a signal sent to a PID namespace's init that has no handler
//! for it, so `docker stop` would wait for its SIGKILL). A signal that arrives between two
//! waits is kept and acted on at the next check. The handlers outlive the runtime: the
//! caller restores the default actions with launcher_sys::default_stop_signals before the
//! exec.

use std::task::Poll;

use launcher_sys::StopSignal;

pub struct StopSignals(Vec<(StopSignal, tokio::signal::unix::Signal)>);

impl StopSignals {
    /// Install the handlers; must be called inside the runtime.
    pub fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        StopSignal::ALL
            .into_iter()
            .map(|s| Ok((s, signal(SignalKind::from_raw(s.raw()))?)))
            .collect::<std::io::Result<_>>()
            .map(StopSignals)
    }

    /// The next stop signal received.
    pub async fn recv(&mut self) -> StopSignal {
        std::future::poll_fn(|cx| self.poll(cx)).await
    }

    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> Poll<StopSignal> {
        for (stop, stream) in &mut self.0 {
            if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                return Poll::Ready(*stop);
            }
        }
        Poll::Pending
    }

    /// A stop signal received since the last look, if any; must be awaited inside the
    /// runtime. The runtime reads the signal pipe before a yielded task runs again, so
    /// a signal delivered before this call is seen.
    pub async fn pending(&mut self) -> Option<StopSignal> {
        tokio::task::yield_now().await;
        std::future::poll_fn(|cx| {
            Poll::Ready(match self.poll(cx) {
                Poll::Ready(signal) => Some(signal),
                Poll::Pending => None,
            })
        })
        .await
    }
}
