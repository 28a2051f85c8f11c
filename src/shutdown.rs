//! One shutdown signal, fanned out to every task of the process: the first
//! SIGTERM or SIGINT asks everything to stop gracefully (drain reviews, finish
//! reconciles, release the Lease); a second one aborts the process at once.

use tokio::sync::watch;

/// Exit code when a second signal aborts the process.
pub const ABORT_EXIT_CODE: i32 = 130;

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A receiver of the process's shutdown request; clone it into every task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Listens for the process's signals: the first requests shutdown, the
    /// second exits with [`ABORT_EXIT_CODE`].
    pub fn on_signals() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            signal().await;
            tracing::info!("shutdown requested; a second signal aborts");
            let _ = tx.send(true);
            signal().await;
            tracing::warn!("second signal: aborting");
            std::process::exit(ABORT_EXIT_CODE);
        });
        Self(rx)
    }

    /// A shutdown requested by the returned sender (tests, embedding).
    pub fn manual() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Whether shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is requested (or every sender is gone).
    pub async fn requested(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// The underlying receiver.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }
}
