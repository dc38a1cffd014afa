"""NumPyro peer of benches/svi.rs: SVI step time for eight schools and hierarchical regression.

Run: pip install numpyro jax && python3 benches/peers/numpyro_svi.py
Same models as spread::infer::examples (non-centred eight schools; hierarchical regression with
1000 groups x 20 rows, synthetic data of the same shape), mean-field AutoNormal guide, Adam,
one particle. Prints microseconds per step of the jit-compiled `svi.update` called from a Python
loop (after a warm-up call that compiles it). Compare with `cargo bench --bench svi` (us/step).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.optim import Adam

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(sigma)):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)


def hierarchical(x, y):
    a = numpyro.sample("a", dist.Normal(0.0, 5.0))
    s = numpyro.sample("s", dist.HalfNormal(2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    with numpyro.plate("group", x.shape[0], dim=-2):
        alpha = numpyro.sample("alpha", dist.Normal(a, s))
        with numpyro.plate("row", x.shape[1], dim=-1):
            numpyro.sample("y", dist.Normal(alpha + b * x, 1.0), obs=y)


def time_model(name, model, args, steps):
    svi = SVI(model, AutoNormal(model), Adam(0.05), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), *args)
    update = jax.jit(svi.update)
    state, loss = update(state, *args)
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = update(state, *args)
    jax.block_until_ready(loss)
    loop_us = (time.perf_counter() - start) / steps * 1e6
    print(f"{name:<44} jit svi.update {loop_us:9.1f} us/step")


def main():
    print(f"numpyro {numpyro.__version__}, jax {jax.__version__}, devices {jax.devices()}")
    time_model("eight_schools (8 schools)", eight_schools, (SIGMA, Y), 4000)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1000, 20))
    alpha = 1.0 + 0.5 * rng.standard_normal((1000, 1))
    y = alpha + 0.7 * x + rng.standard_normal((1000, 20))
    time_model("hierarchical_regression (1000 groups x 20)", hierarchical, (jnp.array(x), jnp.array(y)), 400)
    x = rng.standard_normal((1000, 200))
    alpha = 1.0 + 0.5 * rng.standard_normal((1000, 1))
    y = alpha + 0.7 * x + rng.standard_normal((1000, 200))
    time_model("hierarchical_regression (1000 groups x 200)", hierarchical, (jnp.array(x), jnp.array(y)), 100)


if __name__ == "__main__":
    main()
