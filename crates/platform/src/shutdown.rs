//! Graceful shutdown: one token every server and loop of a process watches.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// Cancelled when the process should stop. Clone it into every task.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels this token when SIGTERM or SIGINT arrives.
    pub fn on_signals(self) -> Self {
        let token = self.clone();
        tokio::spawn(async move {
            signal().await;
            tracing::info!("shutdown signal received, draining");
            token.trigger();
        });
        self
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once shutdown has been requested.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let token = self.0.clone();
        async move { token.cancelled().await }
    }
}

async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs `fut` to completion, or gives up `drain` after shutdown was requested: a
/// stuck connection cannot keep a terminating pod alive past its grace period.
pub async fn drain<F: Future<Output = T>, T>(
    shutdown: &Shutdown,
    drain: Duration,
    fut: F,
) -> Option<T> {
    tokio::pin!(fut);
    tokio::select! {
        out = &mut fut => return Some(out),
        () = shutdown.wait() => {}
    }
    match tokio::time::timeout(drain, fut).await {
        Ok(out) => Some(out),
        Err(_) => {
            tracing::warn!(
                drain_ms = drain.as_millis() as u64,
                "drain timed out, stopping anyway"
            );
            None
        }
    }
}
