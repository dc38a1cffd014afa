"""Loads a spread run's posterior.npz + posterior_dims.json into ArviZ and prints a JSON summary
(variable name -> dims and posterior mean). Usage: arviz_posterior.py OUT_DIR"""
import json
import sys

import arviz as az
import numpy as np

out = sys.argv[1]
npz = np.load(f"{out}/posterior.npz")
meta = json.load(open(f"{out}/posterior_dims.json"))
posterior = {k: npz[k] for k in npz.files}
idata = az.from_dict(posterior=posterior, dims=meta["dims"], coords=meta["coords"])
post = idata.posterior
print(json.dumps({
    name: {"dims": list(post[name].dims), "mean": float(post[name].mean())}
    for name in post.data_vars
}))
