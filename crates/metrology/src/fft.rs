//! A radix-2 complex FFT on split real/imaginary arrays, sized once for the largest window.
//!
//! Written here rather than taken from a crate: `rustfft`/`realfft` need `std`, and `microfft`
//! is `f32`-only with sizes fixed at compile time. What the window analysis needs is small: one
//! complex transform per phase and window of a power-of-two size (the voltage in the real part,
//! the current in the imaginary part, separated afterwards). Twiddles are stored per stage, so
//! every butterfly loop reads them contiguously and the compiler can vectorise it, and radix-2
//! stages are fused in pairs (radix-2²): one pass over memory and three complex multiplications
//! per four points instead of two passes and four.

use alloc::vec;
use alloc::vec::Vec;
use core::f64::consts::PI;

pub(crate) struct Fft {
    n_max: usize,
    /// Twiddles of every stage, concatenated: the stage with half-length `h` (1, 2, 4, ...)
    /// starts at index `h - 1` and holds `exp(-iπk/h)` for `k < h`.
    tw_re: Vec<f64>,
    tw_im: Vec<f64>,
    /// Bit-reversal permutation of `n_max`; smaller sizes shift it right.
    rev: Vec<u32>,
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
        let bits = n_max.trailing_zeros();
        let rev = (0..n_max)
            .map(|k| {
                if bits == 0 {
                    0
                } else {
                    (k.reverse_bits() >> (usize::BITS - bits)) as u32
                }
            })
            .collect();
        Self {
            n_max,
            tw_re,
            tw_im,
            rev,
        }
    }

    /// In-place forward transform X_k = Σ x_n·exp(−2πikn/N) of `re + i·im`; the length must be
    /// a power of two no larger than `n_max`.
    #[cfg(test)]
    pub(crate) fn forward(&self, re: &mut [f64], im: &mut [f64]) {
        let n = re.len();
        for k in 0..n {
            let r = self.bit_reversed(k, n);
            if r > k {
                re.swap(k, r);
                im.swap(k, r);
            }
        }
        self.forward_from_bit_reversed(re, im);
    }

    /// The largest transform size these tables hold.
    pub(crate) fn n_max(&self) -> usize {
        self.n_max
    }

    /// Where input sample `k` of an `n`-point transform goes for
    /// [`forward_from_bit_reversed`](Self::forward_from_bit_reversed). Writing the input there
    /// directly saves the permutation pass.
    #[inline]
    pub(crate) fn bit_reversed(&self, k: usize, n: usize) -> usize {
        let shift = self.n_max.trailing_zeros() - n.trailing_zeros();
        (self.rev[k] >> shift) as usize
    }

    /// The forward transform of an input stored in bit-reversed order; output in natural order.
    pub(crate) fn forward_from_bit_reversed(&self, re: &mut [f64], im: &mut [f64]) {
        let n = re.len();
        debug_assert!(n.is_power_of_two() && n <= self.n_max && im.len() == n);
        if n < 2 {
            return;
        }
        let mut h = 1;
        if n >= 4 {
            first_radix4_stage(re, im);
            h = 4;
        }
        while 4 * h <= n {
            self.radix4_stage(re, im, h);
            h *= 4;
        }
        if 2 * h == n {
            self.radix2_stage(re, im, h);
        }
    }

    /// The radix-2 stages of half-lengths `h` and `2h` in one pass.
    fn radix4_stage(&self, re: &mut [f64], im: &mut [f64], h: usize) {
        let (w1r, w1i) = (&self.tw_re[h - 1..2 * h - 1], &self.tw_im[h - 1..2 * h - 1]);
        let (w2r, w2i) = (
            &self.tw_re[2 * h - 1..3 * h - 1],
            &self.tw_im[2 * h - 1..3 * h - 1],
        );
        // Equal lengths stated up front let the compiler drop the per-element bounds checks.
        assert!(w1r.len() == h && w1i.len() == h && w2r.len() == h && w2i.len() == h);
        for (r, i) in re.chunks_exact_mut(4 * h).zip(im.chunks_exact_mut(4 * h)) {
            let (r01, r23) = r.split_at_mut(2 * h);
            let (r0, r1) = r01.split_at_mut(h);
            let (r2, r3) = r23.split_at_mut(h);
            let (i01, i23) = i.split_at_mut(2 * h);
            let (i0, i1) = i01.split_at_mut(h);
            let (i2, i3) = i23.split_at_mut(h);
            let (r1, r2, r3, i1, i2, i3) = (
                &mut r1[..h],
                &mut r2[..h],
                &mut r3[..h],
                &mut i1[..h],
                &mut i2[..h],
                &mut i3[..h],
            );
            for k in 0..h {
                // Stage h: (0, 1) and (2, 3) with twiddle W1 = exp(−iπk/h).
                let t1r = r1[k] * w1r[k] - i1[k] * w1i[k];
                let t1i = r1[k] * w1i[k] + i1[k] * w1r[k];
                let t3r = r3[k] * w1r[k] - i3[k] * w1i[k];
                let t3i = r3[k] * w1i[k] + i3[k] * w1r[k];
                let (b0r, b0i) = (r0[k] + t1r, i0[k] + t1i);
                let (b1r, b1i) = (r0[k] - t1r, i0[k] - t1i);
                let (b2r, b2i) = (r2[k] + t3r, i2[k] + t3i);
                let (b3r, b3i) = (r2[k] - t3r, i2[k] - t3i);
                // Stage 2h: (0, 2) with W2 = exp(−iπk/2h), (1, 3) with W2·exp(−iπ/2) = −i·W2.
                let ur = b2r * w2r[k] - b2i * w2i[k];
                let ui = b2r * w2i[k] + b2i * w2r[k];
                let vr = b3r * w2i[k] + b3i * w2r[k];
                let vi = -(b3r * w2r[k] - b3i * w2i[k]);
                r0[k] = b0r + ur;
                i0[k] = b0i + ui;
                r2[k] = b0r - ur;
                i2[k] = b0i - ui;
                r1[k] = b1r + vr;
                i1[k] = b1i + vi;
                r3[k] = b1r - vr;
                i3[k] = b1i - vi;
            }
        }
    }

    fn radix2_stage(&self, re: &mut [f64], im: &mut [f64], h: usize) {
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
    }
}

/// The stages of half-lengths 1 and 2, whose twiddles are 1 and −i: additions only.
fn first_radix4_stage(re: &mut [f64], im: &mut [f64]) {
    for (r, i) in re.chunks_exact_mut(4).zip(im.chunks_exact_mut(4)) {
        let (b0r, b0i) = (r[0] + r[1], i[0] + i[1]);
        let (b1r, b1i) = (r[0] - r[1], i[0] - i[1]);
        let (b2r, b2i) = (r[2] + r[3], i[2] + i[3]);
        let (b3r, b3i) = (r[2] - r[3], i[2] - i[3]);
        // −i·b3 = (b3i, −b3r).
        r[0] = b0r + b2r;
        i[0] = b0i + b2i;
        r[2] = b0r - b2r;
        i[2] = b0i - b2i;
        r[1] = b1r + b3i;
        i[1] = b1i - b3r;
        r[3] = b1r - b3i;
        i[3] = b1i + b3r;
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
