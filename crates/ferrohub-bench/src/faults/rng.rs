//! A small seedable random number generator (SplitMix64) for the fault runner's choices: when
//! to kill, how long the hub stays down, back-off jitter. Seedable so that a run that found
//! something can be repeated with the same kill moments (`--seed`); not for anything secret.

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state, a full period, good enough mixing for
/// picking moments and jitter.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed from the operating system's random source (falls back to the clock).
    pub fn os_seed() -> u64 {
        match ferrohub_auth::SymmetricKey::try_generate() {
            Ok(key) => {
                let mut w = [0u8; 8];
                w.copy_from_slice(&key.as_bytes()[..8]);
                u64::from_le_bytes(w)
            }
            Err(_) => crate::identity::unix_now_nanos(),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits make an exactly representable fraction.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `[lo, hi)` (`lo` when the range is empty).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        if hi <= lo {
            return lo;
        }
        lo + (hi - lo) * self.unit()
    }

    /// A generator for another task, derived from this one (different streams per device).
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn uniform_stays_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..10_000 {
            let x = r.uniform(0.5, 3.0);
            assert!((0.5..3.0).contains(&x), "{x}");
        }
        assert_eq!(r.uniform(2.0, 2.0), 2.0);
        assert_eq!(r.uniform(3.0, 1.0), 3.0);
    }

    #[test]
    fn unit_spreads_over_the_interval() {
        let mut r = Rng::new(9);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            buckets[(r.unit() * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
