//! The bare accumulation Σv², Σi², Σv·i over a buffer: the memory-bound floor of any
//! power computation, used by the benchmarks as the reference rate.

/// Σv², Σi² and Σv·i over two equally long buffers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PowerSums {
    /// Σ v².
    pub vv: f64,
    /// Σ i².
    pub ii: f64,
    /// Σ v·i.
    pub vi: f64,
}

/// Number of independent partial sums. Eight lanes let the compiler keep two 4-wide (or four
/// 2-wide) vector accumulators per sum without reordering float additions itself, which it may
/// not do.
const LANES: usize = 8;

/// Accumulates Σv², Σi², Σv·i over the common length of `v` and `i`.
pub fn power_sums(v: &[f64], i: &[f64]) -> PowerSums {
    let n = v.len().min(i.len());
    let (v, i) = (&v[..n], &i[..n]);
    let mut vv = [0.0; LANES];
    let mut ii = [0.0; LANES];
    let mut vi = [0.0; LANES];
    let mut vc = v.chunks_exact(LANES);
    let mut ic = i.chunks_exact(LANES);
    for (a, b) in (&mut vc).zip(&mut ic) {
        for k in 0..LANES {
            vv[k] += a[k] * a[k];
            ii[k] += b[k] * b[k];
            vi[k] += a[k] * b[k];
        }
    }
    for (a, b) in vc.remainder().iter().zip(ic.remainder()) {
        vv[0] += a * a;
        ii[0] += b * b;
        vi[0] += a * b;
    }
    PowerSums {
        vv: vv.iter().sum(),
        ii: ii.iter().sum(),
        vi: vi.iter().sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_match_a_plain_loop_for_every_remainder_length() {
        for n in 0..40 {
            let v: [f64; 40] = core::array::from_fn(|k| k as f64 * 0.5 - 3.0);
            let i: [f64; 40] = core::array::from_fn(|k| 2.0 - k as f64 * 0.25);
            let s = power_sums(&v[..n], &i[..n]);
            let vv: f64 = v[..n].iter().map(|x| x * x).sum();
            let ii: f64 = i[..n].iter().map(|x| x * x).sum();
            let vi: f64 = v[..n].iter().zip(&i[..n]).map(|(a, b)| a * b).sum();
            assert!(
                (s.vv - vv).abs() < 1e-9 && (s.ii - ii).abs() < 1e-9 && (s.vi - vi).abs() < 1e-9
            );
        }
    }
}
