//! A small deterministic pseudo-random generator (xorshift64*, Vigna 2016) for sampled attacks:
//! the same seed gives the same run, so a failure can be replayed.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value below `bound` (which must not be 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
