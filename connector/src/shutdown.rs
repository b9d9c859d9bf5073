//! The stop signal: SIGINT or SIGTERM cancels a token that every long-running part watches.

use tokio_util::sync::CancellationToken;

/// Cancels the returned token on SIGINT or SIGTERM. Call once, from `main`.
pub fn cancel_on_signal() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "stopping");
        cancel.cancel();
    });
    Ok(token)
}
