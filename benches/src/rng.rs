//! [`Xorshift64`]: a seeded generator small enough to read, so inputs depend only on the seed.

/// Marsaglia's xorshift64* generator. Not for anything but test inputs.
#[derive(Clone, Debug)]
pub struct Xorshift64 {
    /// Never zero: zero is xorshift's only fixed point.
    state: u64,
}

impl Xorshift64 {
    /// A generator for `seed`; seed 0 is mapped to a fixed non-zero state.
    pub fn new(seed: u64) -> Self {
        Self { state: if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed } }
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`), by multiply-shift: no modulo bias worth measuring here.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0) has no value to return");
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A random element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_zero_seed_is_usable() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut rng = Xorshift64::new(7);
                move |_| rng.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut rng = Xorshift64::new(7);
                move |_| rng.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        let mut zero = Xorshift64::new(0);
        assert_ne!(zero.next_u64(), zero.next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Xorshift64::new(1);
        let mut seen = [false; 12];
        for _ in 0..1_000 {
            seen[rng.below(12)] = true;
        }
        assert!(seen.iter().all(|&s| s), "every value of 0..12 drawn: {seen:?}");
    }
}
