#!/usr/bin/env python3
"""numpy reference for the metrology benchmark (crates/metrology/benches/metrology.rs, group b).

Measures, in million sample pairs (v, i) per second on one core, the same per-window analysis
the Rust `Analyzer` does, vectorised over all windows of a 30-s, 8 kHz recording at once:

  same_algorithm  cycle-aligned windows of 10 cycles with fractional boundaries (crossings of a
                  smoothed voltage, linearly interpolated), exact boundary weights via cumulative
                  sums, DC removal, RMS, P, the fundamental by direct correlation, harmonic
                  subgroups by 4-point Lagrange resampling onto 1024 points and one batched
                  complex FFT per window (v + j·i), THD, Q1, S, PF, DPF;
  simple_rfft     the lower bound a numpy user would write first: fixed 1600-sample windows,
                  batched rfft of v and i, sums for RMS/P, harmonic bins, Q1 from bin 10.

Run on one core, as the Rust benchmark:
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 1 python3 bench/metrology_numpy.py
Prints one line per variant with the best of several runs, and the machine load.
"""

import os
import time

import numpy as np

FS = 8000.0
SECONDS = 30.0
F0 = 50.02
CYCLES = 10
GRID = 1024
MAX_H = 50


def signal(n, shift=0.0):
    """The benchmark's distorted voltage and current (same shape as the Rust bench)."""
    rng = np.random.default_rng(1)
    t = 2 * np.pi * F0 / FS * np.arange(n) + shift
    v = 325 * np.sin(t) + 9 * np.sin(3 * t) + 6 * np.sin(5 * t + 1) + rng.uniform(-0.5, 0.5, n)
    i = (14 * np.sin(t - 0.5) + 4 * np.sin(3 * t - 1) + 3 * np.sin(5 * t + 2)
         + 2 * np.sin(7 * t) + 0.01 * rng.uniform(-0.5, 0.5, n))
    return v, i


def crossings(v):
    """Rising zero crossings of a smoothed voltage (moving mean over 1/4 nominal cycle, with
    DC removed), interpolated linearly; the smoothing's delay is constant, so periods are exact.
    """
    k = int(FS / 50 / 4)
    cs = np.cumsum(v - v.mean())
    y = (cs[k - 1:] - np.concatenate(([0.0], cs[:-k]))) / k
    neg = y[:-1] < 0
    idx = np.nonzero(neg & (y[1:] >= 0))[0]
    frac = y[idx] / (y[idx] - y[idx + 1])
    return idx + frac + (k - 1) / 2


def same_algorithm(v, i):
    x = crossings(v)
    # Windows of CYCLES cycles, gapless: boundaries every CYCLES-th crossing.
    b = x[4::CYCLES]  # skip the first few cycles, as the Rust tracker does
    xa, xb = b[:-1], b[1:]
    xa, xb = xa[xb + 3 < len(v)], xb[xb + 3 < len(v)]
    length = xb - xa
    # Boundary weights through cumulative sums: S(x) = integral of the sample-and-hold signal
    # whose sample n covers [n - 1/2, n + 1/2).
    na = np.floor(xa + 0.5).astype(np.int64)
    nb = np.floor(xb + 0.5).astype(np.int64)
    sums = {}
    for name, c in (("v", v), ("i", i), ("vv", v * v), ("ii", i * i), ("vi", v * i)):
        cs = np.concatenate(([0.0], np.cumsum(c)))
        at_b = cs[nb] + c[nb] * (xb - (nb - 0.5))
        at_a = cs[na] + c[na] * (xa - (na - 0.5))
        sums[name] = (at_b - at_a) / length
    mv, mi = sums["v"], sums["i"]
    v_rms = np.sqrt(np.maximum(sums["vv"] - mv * mv, 0))
    i_rms = np.sqrt(np.maximum(sums["ii"] - mi * mi, 0))
    p = sums["vi"] - mv * mi
    # Fundamental by correlation over each window's samples (unit weights inside; the boundary
    # samples' fractional weights applied through the same cumulative-sum trick).
    n0 = np.floor(xa + 0.5).astype(np.int64)
    n1 = np.floor(xb + 0.5).astype(np.int64)
    counts = n1 - n0 + 1
    idx = np.repeat(n0, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    win = np.repeat(np.arange(len(xa)), counts)
    theta = 2 * np.pi * CYCLES * (idx - xa[win]) / length[win]
    w = np.ones(len(idx))
    starts = np.cumsum(counts) - counts
    w[starts] = n0 + 0.5 - xa
    w[starts + counts - 1] = xb - (n1 - 0.5)
    cw, sw = w * np.cos(theta), w * np.sin(theta)
    k = np.sqrt(2) / length
    def phasor(c, mean):
        re = np.add.reduceat(c[idx] * cw, starts) - mean * np.add.reduceat(cw, starts)
        im = np.add.reduceat(c[idx] * sw, starts) - mean * np.add.reduceat(sw, starts)
        return k * (re - 1j * im)
    v1, i1 = phasor(v, mv), phasor(i, mi)
    s1 = v1 * np.conj(i1)
    q1 = s1.imag
    s = v_rms * i_rms
    pf = p / s
    dpf = s1.real / np.abs(s1)
    # Harmonics: 4-point Lagrange resampling onto GRID points per window, one complex FFT.
    pos = xa[:, None] + length[:, None] * (np.arange(GRID) / GRID)[None, :]
    base = np.floor(pos).astype(np.int64)
    mu = pos - base
    a, bb, c = mu + 1, mu - 1, mu - 2
    taps = (-mu * bb * c / 6, a * bb * c / 2, -a * mu * c / 2, a * mu * bb / 6)
    z = sum(t * (v[base - 1 + j] + 1j * i[base - 1 + j]) for j, t in enumerate(taps))
    spec = np.fft.fft(z, axis=1)
    rev = np.conj(np.roll(spec[:, ::-1], 1, axis=1))
    vs, cs = (spec + rev) / 2, (spec - rev) / 2j
    scale = 2.0 / GRID**2
    bins = CYCLES * np.arange(1, MAX_H + 1)
    sub = np.stack([bins - 1, bins, bins + 1], axis=1)
    vh = np.sqrt(scale * (np.abs(vs[:, sub]) ** 2).sum(axis=2))
    ih = np.sqrt(scale * (np.abs(cs[:, sub]) ** 2).sum(axis=2))
    v_thd = 100 * np.sqrt((vh[:, 1:] ** 2).sum(axis=1)) / vh[:, 0]
    i_thd = 100 * np.sqrt((ih[:, 1:] ** 2).sum(axis=1)) / ih[:, 0]
    return dict(p=p, q=q1, s=s, pf=pf, dpf=dpf, v_thd=v_thd, i_thd=i_thd, windows=len(xa))


def simple_rfft(v, i):
    n = int(CYCLES * FS / 50)
    w = len(v) // n
    vw, iw = v[: w * n].reshape(w, n), i[: w * n].reshape(w, n)
    vw = vw - vw.mean(axis=1, keepdims=True)
    iw = iw - iw.mean(axis=1, keepdims=True)
    v_rms = np.sqrt((vw * vw).mean(axis=1))
    i_rms = np.sqrt((iw * iw).mean(axis=1))
    p = (vw * iw).mean(axis=1)
    vs, cs = np.fft.rfft(vw, axis=1), np.fft.rfft(iw, axis=1)
    bins = CYCLES * np.arange(1, MAX_H + 1)
    sub = np.stack([bins - 1, bins, bins + 1], axis=1)
    scale = 2.0 / n**2
    vh = np.sqrt(scale * (np.abs(vs[:, sub]) ** 2).sum(axis=2))
    ih = np.sqrt(scale * (np.abs(cs[:, sub]) ** 2).sum(axis=2))
    s1 = vs[:, CYCLES] * np.conj(cs[:, CYCLES]) * scale
    s = v_rms * i_rms
    return dict(p=p, q=s1.imag, s=s, pf=p / s, v_thd=100 * np.sqrt((vh[:, 1:] ** 2).sum(axis=1)) / vh[:, 0],
                windows=w)


def best_rate(fn, v, i, repeats=7):
    """Best of `repeats` runs, as (M pairs/s by CPU time, M pairs/s by wall time, output).
    CPU time (this thread's) keeps the figure meaningful on a busy machine."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        c, t = time.thread_time(), time.perf_counter()
        out = fn(v, i)
        best_wall = min(best_wall, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.thread_time() - c)
    return len(v) / best_cpu / 1e6, len(v) / best_wall / 1e6, out


def main():
    n = int(SECONDS * FS)
    v, i = signal(n)
    load = os.getloadavg()
    print(f"numpy {np.__version__}, {SECONDS:.0f} s at {FS:.0f} Hz = {n} pairs per run, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name, fn in (("same_algorithm", same_algorithm), ("simple_rfft", simple_rfft)):
        cpu, wall, out = best_rate(fn, v, i)
        print(f"{name:15s} {cpu:8.1f} M pairs/s cpu {wall:8.1f} M pairs/s wall  ({out['windows']} windows, "
              f"mean P {np.mean(out['p']):.2f} W, mean Q1 {np.mean(out['q']):.2f} var)")


if __name__ == "__main__":
    main()
