//! Waits between retries: doubling from a first wait up to a cap, the one
//! rule every retry loop in Herald follows (each with its own bounds).

use std::time::Duration;

/// The waits of one retry loop: `first`, then twice the last, never past
/// `cap`; [`Backoff::reset`] after a success starts again from `first`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        let first = first.max(Duration::from_millis(1));
        let cap = cap.max(first);
        Backoff {
            first,
            cap,
            next: first,
        }
    }

    /// The wait before the next try (and the one after doubles).
    pub fn next_wait(&mut self) -> Duration {
        let w = self.next;
        self.next = self.next.saturating_mul(2).min(self.cap);
        w
    }

    /// [`Backoff::next_wait`], a random 50-100% of it: many retrying
    /// together do not retry in step.
    pub fn next_jittered(&mut self) -> Duration {
        jitter(self.next_wait())
    }

    /// Sleeps the next wait.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }

    /// After a success: the next wait is the first again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The wait before try `n + 1` after `n` failures, without a loop's
    /// state: `first * 2^n`, capped.
    pub fn nth(first: Duration, cap: Duration, n: u32) -> Duration {
        let first = first.max(Duration::from_millis(1));
        first.saturating_mul(1u32 << n.min(20)).min(cap.max(first))
    }
}

/// A random 50-100% of `d`.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_starts_again() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_wait()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000].map(ms));
        b.reset();
        assert_eq!(b.next_wait(), ms(100));
        for _ in 0..100 {
            let j = b.next_jittered();
            assert!(j <= ms(1000) && j >= ms(100), "{j:?}");
        }
        assert_eq!(Backoff::nth(ms(200), ms(1000), 0), ms(200));
        assert_eq!(Backoff::nth(ms(200), ms(1000), 2), ms(800));
        assert_eq!(Backoff::nth(ms(200), ms(1000), 40), ms(1000));
        // A zero first wait still waits.
        assert_eq!(Backoff::new(ms(0), ms(0)).next_wait(), ms(1));
    }
}
