#!/usr/bin/env python3
"""Does a true edge at a knot of the piecewise-linear reference table miscalibrate the edge?

The shifted-reference fits read Sherrell's oxidized f'/f'' table (1 eV grid) at E - shift by
linear interpolation, and the simulated truth is shift 0, where every channel energy sits on a
knot: the likelihood of the shift has a kink at the truth (the slopes of the segments left and
right of each knot differ). A toy of it: each channel's f'' (and f') response to the shift is
linear on each side of 0 with that side's segment slope, channel weights a Gaussian spectrum of
sd 15 eV around 7120 eV, noise scaled so the posterior sd is ~0.15 eV (the 125-image fits).
Over N noise draws it prints the exact (grid) posterior's rms z of the truth and the coverage of
its 90% interval. Usage: python3 examples/recovery/knot_toy.py [N]
"""
import sys

import numpy as np

TABLE = "src/plan/reference/Fe_ox_red_7000_7300.csv"


def main(n_draws=3000):
    d = np.loadtxt(TABLE, delimiter=",", skiprows=2)
    energy, fp, fdp = d[:, 0], d[:, 1], d[:, 2]
    channels = np.arange(7070, 7170)
    i = np.searchsorted(energy, channels)
    weight = np.exp(-0.5 * ((channels - 7120) / 15.0) ** 2)
    rng = np.random.default_rng(0)
    shift = np.linspace(-1.5, 1.5, 6001)
    for name, with_fp in [("f'' only", 0.0), ("f'' and f'", 1.0)]:
        # d value / d shift: s < 0 reads the segment above each knot, s > 0 the one below.
        left = np.c_[-(fdp[i + 1] - fdp[i]), -with_fp * (fp[i + 1] - fp[i])]
        right = np.c_[-(fdp[i] - fdp[i - 1]), -with_fp * (fp[i] - fp[i - 1])]
        info_l = (left**2 * weight[:, None]).sum()
        info_r = (right**2 * weight[:, None]).sum()
        k = 1.0 / (0.15**2 * (info_l + info_r) / 2)
        z, covered = [], 0
        for _ in range(n_draws):
            eps = rng.normal(size=left.shape) * np.sqrt(weight[:, None] * k)
            u, v = (left * eps).sum(), (right * eps).sum()
            loglik = np.where(
                shift < 0,
                u * shift - k * info_l * shift**2 / 2,
                v * shift - k * info_r * shift**2 / 2,
            )
            p = np.exp(loglik - loglik.max())
            p /= p.sum()
            mean = (p * shift).sum()
            sd = np.sqrt((p * (shift - mean) ** 2).sum())
            z.append(mean / sd)
            cdf = np.cumsum(p)
            q05, q95 = shift[np.searchsorted(cdf, 0.05)], shift[np.searchsorted(cdf, 0.95)]
            covered += q05 <= 0.0 <= q95
        z = np.array(z)
        print(
            f"{name}: information left/right of the knot {info_l / info_r:.3f}; "
            f"rms z {np.sqrt((z**2).mean()):.3f}, mean z {z.mean():+.3f}, "
            f"90% coverage {covered / n_draws:.3f} over {n_draws} draws"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
