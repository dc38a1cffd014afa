"""The flat field a gain flow learned, against the simulated one.

Reads a fit's checkpoint.msgpack (needs `pip install msgpack numpy`), takes the parameter block
of its correction flow (the conditioner: 2 inputs, the pixel's panel position scaled to [-1, 1],
hidden layers of --hidden widths with tanh, one output h), and prints h(x, y) - h(0, y) along
the fast axis x at five heights y, next to ln(1 + G x), the log of the flat-field error that
`spreadc simulate --gain-gradient G` applies. (The level of h is not identified: a common
factor goes into the images' scales and backgrounds, so only differences are compared.)

    python3 examples/recovery/gain_map.py [--gradient 0.3] [--hidden 32,32] FIT_DIR [FIT_DIR ...]
"""
import sys

import msgpack
import numpy as np


def conditioner(path, hidden):
    with open(path + "/checkpoint.msgpack", "rb") as f:
        state = msgpack.unpackb(f.read(), strict_map_key=False)
    blocks = [b for b in state["layout"]["blocks"] if b and b["kind"] == "Flow"]
    if len(blocks) != 1:
        sys.exit(f"{path}: {len(blocks)} flow blocks, expected one")
    b = blocks[0]
    p = np.array(state["params"][b["offset"]:b["offset"] + b["per_instance"]])
    widths = [2, *hidden, 1]
    need = sum(i * o + o for i, o in zip(widths[:-1], widths[1:]))
    if need != len(p):
        sys.exit(f"{path}: the flow has {len(p)} parameters, widths {widths} need {need}")
    layers, at = [], 0
    for i, o in zip(widths[:-1], widths[1:]):
        w = p[at:at + i * o].reshape(i, o)
        at += i * o
        layers.append((w, p[at:at + o]))
        at += o
    return layers


def h(layers, x):
    for k, (w, b) in enumerate(layers):
        x = x @ w + b
        if k + 1 < len(layers):
            x = np.tanh(x)
    return x[:, 0]


def main(args):
    gradient, hidden = 0.3, [32, 32]
    while args and args[0].startswith("--"):
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--gradient":
            gradient = float(value)
        elif flag == "--hidden":
            hidden = [int(v) for v in value.split(",")]
        else:
            sys.exit(f"unknown option {flag}")
    xs = np.linspace(-0.95, 0.95, 9)
    fmt = lambda v: " ".join(f"{a:+.3f}" for a in v)
    print(f"x:              {fmt(xs)}")
    print(f"ln(1 + {gradient} x): {fmt(np.log1p(gradient * xs))}")
    for path in args:
        layers = conditioner(path, hidden)
        print(path)
        for y in [-0.9, -0.5, 0.0, 0.5, 0.9]:
            grid = np.stack([xs, np.full_like(xs, y)], 1)
            zero = h(layers, np.array([[0.0, y]]))[0]
            print(f"  y = {y:+.1f}:      {fmt(h(layers, grid) - zero)}")


if __name__ == "__main__":
    main(sys.argv[1:])
