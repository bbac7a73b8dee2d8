//! A radix-2 complex FFT on split real/imaginary arrays, sized once for the largest window.
//!
//! Written here rather than taken from a crate: `rustfft`/`realfft` need `std`, and `microfft`
//! is `f32`-only with sizes fixed at compile time. What the window analysis needs is small: one
//! complex transform per phase and window of a power-of-two size (the voltage in the real part,
//! the current in the imaginary part, separated afterwards). Twiddles are stored per stage, so
//! every butterfly loop reads them contiguously and the compiler can vectorise it.

use alloc::vec;
use alloc::vec::Vec;
use core::f64::consts::PI;

pub(crate) struct Fft {
    n_max: usize,
    /// Twiddles of every stage, concatenated: the stage with half-length `h` (1, 2, 4, ...)
    /// starts at index `h - 1` and holds `exp(-iπk/h)` for `k < h`.
    tw_re: Vec<f64>,
    tw_im: Vec<f64>,
}

impl Fft {
    /// Tables for transforms of any power-of-two size up to `n_max` (a power of two).
    pub(crate) fn new(n_max: usize) -> Self {
        debug_assert!(n_max.is_power_of_two());
        let mut tw_re = vec![0.0; n_max.max(2) - 1];
        let mut tw_im = vec![0.0; n_max.max(2) - 1];
        let mut h = 1;
        while h < n_max {
            for k in 0..h {
                let angle = -PI * k as f64 / h as f64;
                tw_re[h - 1 + k] = libm::cos(angle);
                tw_im[h - 1 + k] = libm::sin(angle);
            }
            h *= 2;
        }
        Self {
            n_max,
            tw_re,
            tw_im,
        }
    }

    /// In-place forward transform X_k = Σ x_n·exp(−2πikn/N) of `re + i·im`; the length must be
    /// a power of two no larger than `n_max`.
    pub(crate) fn forward(&self, re: &mut [f64], im: &mut [f64]) {
        let n = re.len();
        debug_assert!(n.is_power_of_two() && n <= self.n_max && im.len() == n);
        if n < 2 {
            return;
        }
        bit_reverse(re, im);
        // First stage (h = 1) needs no twiddles.
        for (r, i) in re.chunks_exact_mut(2).zip(im.chunks_exact_mut(2)) {
            let (ar, ai, br, bi) = (r[0], i[0], r[1], i[1]);
            r[0] = ar + br;
            i[0] = ai + bi;
            r[1] = ar - br;
            i[1] = ai - bi;
        }
        let mut h = 2;
        while h < n {
            let wr = &self.tw_re[h - 1..2 * h - 1];
            let wi = &self.tw_im[h - 1..2 * h - 1];
            for (r, i) in re.chunks_exact_mut(2 * h).zip(im.chunks_exact_mut(2 * h)) {
                let (r0, r1) = r.split_at_mut(h);
                let (i0, i1) = i.split_at_mut(h);
                for k in 0..h {
                    let tr = r1[k] * wr[k] - i1[k] * wi[k];
                    let ti = r1[k] * wi[k] + i1[k] * wr[k];
                    r1[k] = r0[k] - tr;
                    i1[k] = i0[k] - ti;
                    r0[k] += tr;
                    i0[k] += ti;
                }
            }
            h *= 2;
        }
    }
}

fn bit_reverse(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    let bits = n.trailing_zeros();
    for k in 0..n {
        let r = k.reverse_bits() >> (usize::BITS - bits);
        if r > k {
            re.swap(k, r);
            im.swap(k, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_dft() {
        let fft = Fft::new(64);
        for n in [1usize, 2, 4, 8, 16, 64] {
            let xr: Vec<f64> = (0..n)
                .map(|k| libm::sin(k as f64 * 0.7) + 0.1 * k as f64)
                .collect();
            let xi: Vec<f64> = (0..n).map(|k| libm::cos(k as f64 * 1.3)).collect();
            let (mut re, mut im) = (xr.clone(), xi.clone());
            fft.forward(&mut re, &mut im);
            for f in 0..n {
                let (mut sr, mut si) = (0.0, 0.0);
                for t in 0..n {
                    let a = -2.0 * PI * (f * t) as f64 / n as f64;
                    sr += xr[t] * libm::cos(a) - xi[t] * libm::sin(a);
                    si += xr[t] * libm::sin(a) + xi[t] * libm::cos(a);
                }
                assert!(
                    (re[f] - sr).abs() < 1e-9 && (im[f] - si).abs() < 1e-9,
                    "n={n} f={f}"
                );
            }
        }
    }
}
