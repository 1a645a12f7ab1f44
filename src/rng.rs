//! One small seeded generator for everything in the project that needs
//! reproducible pseudo-random numbers: the soak's sizes and payloads, the
//! fault and schedule tests, the SMB2 front's challenge bytes (no secret
//! rides on them: anonymous and guest logins check no response).
//!
//! splitmix64 (Steele, Lea and Flood, 2014): one `u64` of state, full
//! period, good enough statistics for tests. Not cryptographic.
#![forbid(unsafe_code)]

/// A splitmix64 sequence: the same seed gives the same numbers.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The sequence seeded with `seed`.
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0). The modulo's bias is far
    /// below what a test can see for the small `n` used here.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next_u64() % n
    }

    /// The first number of the sequence seeded with `x`: a one-shot hash
    /// of `x`.
    pub fn mix(x: u64) -> u64 {
        SplitMix64::new(x).next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_of_splitmix64() {
        // The reference sequence for seed 1234567 (from the algorithm's
        // published test vector).
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(SplitMix64::mix(1_234_567), 6_457_827_717_110_365_317);
    }

    #[test]
    fn below_stays_below() {
        let mut r = SplitMix64::new(7);
        assert!((0..1000).all(|_| r.below(10) < 10));
        assert_eq!(r.below(0), 0);
    }
}
