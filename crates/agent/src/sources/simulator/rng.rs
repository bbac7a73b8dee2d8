//! Deterministic pseudo-random numbers for the simulator: SplitMix64 and a Gaussian table.
//!
//! The simulator must give the same samples for the same seed on every machine, so it uses its
//! own small generator rather than an OS- or version-dependent one. SplitMix64 (Steele, Lea and
//! Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014) passes BigCrush and
//! costs a few instructions per number, which matters at millions of noisy samples per second.

/// SplitMix64.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The SplitMix64 output function, also used as a stateless hash of (seed, index).
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) from a stateless hash of `seed` and `index`.
pub(crate) fn hash_unit(seed: u64, index: u64) -> f64 {
    (mix(seed ^ mix(index.wrapping_add(0x632B_E59B_D9B4_E019))) >> 11) as f64
        * (1.0 / (1u64 << 53) as f64)
}

const TABLE_BITS: u32 = 12;

/// Standard normal deviates drawn from a precomputed table.
///
/// Box–Muller per sample (a log, a square root and a sine) would cost more than synthesising the
/// sample itself; measurement noise only needs the right variance and a bell shape, so we draw
/// 4096 exact normals once and index them with random bits.
#[derive(Clone, Debug)]
pub(crate) struct Gaussian {
    table: Vec<f64>,
    rng: SplitMix64,
    bits: u64,
    left: u32,
}

impl Gaussian {
    pub(crate) fn new(seed: u64) -> Gaussian {
        let mut rng = SplitMix64::new(seed);
        let n = 1usize << TABLE_BITS;
        let mut table = Vec::with_capacity(n);
        while table.len() < n {
            // Box–Muller: two independent normals from two uniforms.
            let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
            let u2 = rng.next_f64();
            let r = (-2.0 * u1.ln()).sqrt();
            let a = 2.0 * std::f64::consts::PI * u2;
            table.push(r * a.cos());
            table.push(r * a.sin());
        }
        // Normalise the table to zero mean and unit variance exactly, so the configured noise
        // level is what the meter sees.
        let mean = table.iter().sum::<f64>() / n as f64;
        let var = table.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let sd = var.sqrt();
        for x in &mut table {
            *x = (*x - mean) / sd;
        }
        Gaussian {
            table,
            rng,
            bits: 0,
            left: 0,
        }
    }

    /// The next standard normal deviate.
    #[inline]
    pub(crate) fn next(&mut self) -> f64 {
        if self.left == 0 {
            self.bits = self.rng.next_u64();
            self.left = 64 / TABLE_BITS;
        }
        let idx = (self.bits & ((1 << TABLE_BITS) - 1)) as usize;
        self.bits >>= TABLE_BITS;
        self.left -= 1;
        self.table[idx]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_has_unit_variance_and_zero_mean() {
        let mut g = Gaussian::new(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| g.next()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn same_seed_same_numbers_different_seed_different() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = SplitMix64::new(8);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!((0.0..1.0).contains(&hash_unit(3, 99)));
        assert_ne!(hash_unit(3, 99), hash_unit(3, 100));
    }
}
