//! When to try Redis again: capped exponential backoff with jitter, so that
//! many relays restarted together do not reconnect in lockstep.

use std::time::Duration;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Capped exponential backoff with jitter, so that many relays restarted
/// together do not reconnect in lockstep.
pub struct Backoff {
    current: Duration,
    seed: u64,
    reset: bool,
    /// No subscription has succeeded yet (the next one is not a reconnect).
    pub first: bool,
}

impl Backoff {
    pub fn new() -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            current: BACKOFF_MIN,
            seed,
            reset: true,
            first: true,
        }
    }

    pub fn reset(&mut self) {
        self.current = BACKOFF_MIN;
        self.reset = true;
    }

    pub fn is_reset(&self) -> bool {
        self.reset
    }

    /// The next delay: between half and all of the current step, which
    /// then doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        self.reset = false;
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac = 0.5 + (self.seed % 1000) as f64 / 2000.0;
        let delay = self.current.mul_f64(frac);
        self.current = (self.current * 2).min(BACKOFF_MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= BACKOFF_MIN / 2 && delays[0] <= BACKOFF_MIN);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[11] >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
    }
}
