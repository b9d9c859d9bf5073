//! The stop signal: SIGINT or SIGTERM cancels a token that every long-running part watches.

use tokio_util::sync::CancellationToken;

/// Cancels the returned token on the first SIGINT or SIGTERM, logging `stopping` (what the
/// process does now) with the signal's name. Call once, from `main`.
pub fn cancel_on_signal(stopping: &'static str) -> std::io::Result<CancellationToken> {
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
        tracing::info!(signal = name, "{stopping}");
        cancel.cancel();
    });
    Ok(token)
}
