//! The one backoff the worker uses: waits that double per failed attempt up to a cap, for
//! database retries (`runner`) and for settlements without a definite answer (`poll`).

use std::time::Duration;

/// Doubling waits from `first` to at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Waits from `first`, doubling, capped at `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The wait after `failures` failed attempts in a row (0: the first retry): `first`
    /// doubled `failures` times, at most `max`. Never overflows.
    pub fn wait(&self, failures: u32) -> Duration {
        self.first
            .checked_mul(1u32 << failures.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// [`Backoff::wait`] plus up to 10 % jitter, so that what failed together does not
    /// retry together.
    pub fn wait_with_jitter(&self, failures: u32) -> Duration {
        let base = self.wait(failures);
        base + base.mul_f64(rand::random::<f64>() * 0.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves waits double from the first to the cap, never overflow, and jitter stays
    // within 10 %.
    #[test]
    fn waits_double_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        let waits: Vec<Duration> = (0..8).map(|n| backoff.wait(n)).collect();
        assert_eq!(waits[0], Duration::from_millis(250));
        assert_eq!(waits[1], Duration::from_millis(500));
        assert_eq!(waits[7], Duration::from_secs(10));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(backoff.wait(u32::MAX), Duration::from_secs(10));
        let hour = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
        for failures in [0, 2, 12, 40, u32::MAX] {
            let base = hour.wait(failures);
            let jittered = hour.wait_with_jitter(failures);
            assert!(
                jittered >= base && jittered <= base.mul_f64(1.1),
                "{failures}"
            );
        }
        assert_eq!(hour.wait(2), Duration::from_secs(4));
        assert_eq!(hour.wait(12), Duration::from_secs(3600));
    }
}
