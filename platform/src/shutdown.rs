//! A cloneable shutdown signal: one side triggers, every holder can wait for it.

use crate::watch;

/// Triggers a graceful shutdown of everything holding the matching [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Waits for a graceful shutdown. Cheap to clone; every clone sees the same trigger.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and the signal it drives.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Ask every holder of the signal to stop.
    pub fn trigger(&self) {
        self.0.send(true);
    }
}

impl Shutdown {
    /// Whether shutdown has been requested.
    pub fn is_triggered(&self) -> bool {
        self.0.get()
    }

    /// Resolves once shutdown is requested (or the trigger is dropped).
    pub async fn wait(&mut self) {
        self.0.wait_for(|stop| *stop).await;
    }
}

/// A signal that fires on Ctrl-C or SIGTERM (Kubernetes' stop signal). Under simulation, on the
/// node's simulated Ctrl-C.
pub fn on_termination() -> Shutdown {
    let (trigger, shutdown) = channel();
    tokio::spawn(async move {
        wait_for_termination().await;
        trigger.trigger();
    });
    shutdown
}

#[cfg(not(madsim))]
async fn wait_for_termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    biased;
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
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

#[cfg(madsim)]
async fn wait_for_termination() {
    let _ = tokio::signal::ctrl_c().await;
}
