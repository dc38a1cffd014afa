"""Pins a models/rubredoxin_fe.spread fit's guide at the simulated truth, for the oracle profile.

Reads a checkpoint.msgpack written by `spreadc run` (any step) on a dataset `spreadc simulate`
wrote, and writes a copy whose guide is a point mass (sd 1e-7) at the truth.json values: each
image's `rot` (the simulated rotation plus its domains' mean tilt, to first order), `log_scale`
and tilt contrast ((t1 - t2) / sqrt(2) in tilt units, the model's sum_to_zero contrast for
2 domains), every shoebox's background (softplus^-1 of the flat 2 photons), `mosaic_deg`, and
`edge_ev` at 7120.0 eV (the shifted reference's exact value for data simulated from the
oxidized curve). A `--resume` of the pinned checkpoint with `--scan edge_ev=LO:HI:STEP` then
writes the log-likelihood of the edge with every other latent at the truth
(summary.json `convergence.end_profile`): what the data say about the edge when nothing else
is to be inferred. The latent blocks are matched by their order and shapes in this model
(asserted), so another model needs its own map. Needs `pip install msgpack numpy`.

    python3 examples/recovery/truth_profile.py pin CKPT_IN CKPT_OUT truth.json
    python3 examples/recovery/truth_profile.py peak FIT_DIR [FIT_DIR ...]
"""
import json
import math
import sys

import msgpack
import numpy as np

TILT_UNIT_RAD = 0.05 * math.pi / 180.0  # tilt_unit_deg of the model, in radians


def softplus_inv(y):
    return y + math.log(-math.expm1(-y))


def pin(ckpt_in, ckpt_out, truth_path):
    state = msgpack.unpackb(open(ckpt_in, "rb").read(), strict_map_key=False)
    truth = json.load(open(truth_path))
    images = truth["images"]
    blocks = [b for b in state["layout"]["blocks"] if b and b["kind"] != "Flow"]
    names = ["frac_oxidized", "edge_ev", "edge_width_ev", "fdp_delta", "mosaic_deg",
             "rot", "log_scale", "tilt", "background"]
    if len(blocks) != len(names):
        sys.exit(f"{ckpt_in}: {len(blocks)} latent blocks, models/rubredoxin_fe.spread has 9")
    by_name = dict(zip(names, blocks))
    n_shoeboxes = sum(im["n_shoeboxes"] for im in images)
    for name, instances, event in [("edge_ev", 1, 1), ("mosaic_deg", 1, 1),
                                   ("rot", len(images), 3), ("log_scale", len(images), 1),
                                   ("tilt", len(images), 3), ("background", n_shoeboxes, 3)]:
        b = by_name[name]
        if (b["instances"], b["event"], b["kind"]) != (instances, event, "MeanField"):
            sys.exit(f"{ckpt_in}: block {name} is {b}, expected {instances} x {event} MeanField")
    params = state["params"]
    tiny = softplus_inv(1e-7)

    def put(name, inst, values):
        b = by_name[name]
        o = b["offset"] + inst * b["per_instance"]
        d = b["event"]
        params[o:o + d] = [float(v) for v in values]
        params[o + d:o + 2 * d] = [tiny] * d

    put("edge_ev", 0, [7120.0])
    put("mosaic_deg", 0, [math.log(truth["dataset"]["mosaic_deg"])])
    for i, im in enumerate(images):
        t1, t2 = im["tilts"]
        if len(im["tilts"]) != 2:
            sys.exit(f"{truth_path}: image {i} has {len(im['tilts'])} domains, the map is for 2")
        put("rot", i, [im["rot"][a] + (t1[a] + t2[a]) / 2 for a in range(3)])
        put("log_scale", i, [im["log_scale"]])
        put("tilt", i, [(t1[a] - t2[a]) / (math.sqrt(2) * TILT_UNIT_RAD) for a in range(3)])
    flat, fast, slow = truth["background"]
    if fast or slow:
        sys.exit(f"{truth_path}: a sloped background; the map is for a flat one")
    for k in range(n_shoeboxes):
        put("background", k, [softplus_inv(flat), 0.0, 0.0])
    state["m"] = [0.0] * len(state["m"])
    state["v"] = [0.0] * len(state["v"])
    open(ckpt_out, "wb").write(msgpack.packb(state, use_bin_type=True))


def peak(fit_dir):
    """The profile's maximum by a parabola through the 21 grid points around the best one."""
    s = json.load(open(fit_dir + "/summary.json"))
    p = s["convergence"]["end_profile"]
    v, g = np.array(p["values"]) - 7120.0, np.array(p["gains"])
    i = int(np.argmax(g))
    sel = slice(max(0, i - 10), i + 11)
    c = np.polyfit(v[sel], g[sel], 2)
    return -c[1] / (2 * c[0]), math.sqrt(-1.0 / (2 * c[0]))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "pin":
        pin(*sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "peak":
        for d in sys.argv[2:]:
            e, sd = peak(d)
            print(f"{d}\t{e:+.4f}\t{sd:.4f}\t{e / sd:+.2f}")
    else:
        sys.exit(__doc__)
