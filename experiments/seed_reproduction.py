"""The seed notebook's setup, its blow-up, and each fix alone and together.

784 → 100 → 10 ReLU, randn·0.01 init, raw 0–255 pixels, full-batch gradient descent at learning rate
0.01, naive softmax, biases left out of the forward pass (``experiments/seed_model.py``), on the real MNIST digits
available here (t10k split 8000 train / 2000 test). Run in float32 (JAX's default) and float64 (the
seed's NumPy default).
"""

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _common as c
from experiments import seed_model as seed

# ---- defaults -----------------------------------------------------------------------------------
STEPS = 300  # parameter updates for every variant
QUICK_STEPS = 40
BATCH = 128  # the mini-batch fix
VARIANTS = [
    dict(),
    dict(normalize_inputs=True),
    dict(stable_softmax=True),
    dict(bias=True),
    dict(init="he"),
    dict(batch_size=BATCH),
    dict(normalize_inputs=True, stable_softmax=True, bias=True, init="he", batch_size=BATCH),
]
SEED = 0
# --------------------------------------------------------------------------------------------------


def raw_pixels(ds):
    """Undo the dataset's normalization: the seed trained on raw 0–255 pixels."""
    n = ds.normalizer
    return [np.round((x * n.std + n.mean) * 255) for x in (ds.x_train, ds.x_test)]


def run(quick: bool, out):
    ds = c.mnist_digits(quick)
    raw_train, raw_test = raw_pixels(ds)
    steps = QUICK_STEPS if quick else STEPS
    rows, curves, found = [], {}, {}
    for dtype in ("float32",) if quick else ("float32", "float64"):
        jax.config.update("jax_enable_x64", dtype == "float64")
        try:
            for v in VARIANTS:
                setup = seed.SeedSetup(steps=steps, **v)
                xtr, xte = (ds.x_train, ds.x_test) if setup.normalize_inputs else (raw_train, raw_test)
                res = seed.run(
                    setup,
                    jnp.asarray(xtr, dtype),
                    jnp.asarray(ds.y_train),
                    jnp.asarray(xte, dtype),
                    jnp.asarray(ds.y_test),
                    key=jax.random.PRNGKey(SEED),
                )
                rows.append(
                    [
                        setup.fixes(),
                        dtype,
                        res["first_nonfinite_step"] or "never",
                        res["first_nonfinite_params_step"] or "never",
                        f"{res['max_abs_logit']:.4g}",
                        c.pct(res["test_accuracy"]),
                    ]
                )
                found[(setup.fixes(), dtype)] = res
                if dtype == "float32":
                    curves[setup.fixes()] = np.asarray(res["loss"], np.float64)
        finally:
            jax.config.update("jax_enable_x64", False)
    plt = c.plt()
    fig, ax = plt.subplots(figsize=(12, 5))
    lines = {}
    for name, loss in curves.items():
        steps_ = np.arange(1, len(loss) + 1)
        ok = np.isfinite(loss)
        (lines[name],) = ax.plot(steps_[ok], loss[ok], label=name, lw=1)
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    for k, (name, loss) in enumerate(curves.items()):  # non-finite steps: a row of ×, one row per variant
        bad = np.flatnonzero(~np.isfinite(loss)) + 1
        y = hi * 1.6 ** (k + 1)
        ax.plot(bad, np.full(bad.size, y), "x", color=lines[name].get_color(), ms=4)
    ax.set(
        ylim=(lo, hi * 1.6 ** (len(curves) + 1.5)),
        xlabel="update step",
        ylabel="training loss (float32)",
        title="Seed setup and its fixes (× above the curves: steps whose loss is inf/NaN)",
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig_name = c.savefig(fig, out, "seed_reproduction.png")
    return (
        f"Real MNIST digits (t10k split {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test), "
        f"{steps} updates each, learning rate 0.01.\n\n"
        + c.table(
            [
                "fixes applied",
                "dtype",
                "first non-finite loss (step)",
                "first non-finite parameter (step)",
                "largest finite logit magnitude seen",
                "test accuracy",
            ],
            rows,
        )
        + f"\n![loss curves]({fig_name})\n\n"
        + reading(found, 255 * ds.normalizer.std)
    )


def reading(found, scale) -> str:
    """What the table says, in words, with its own numbers."""

    def r(fix, dtype="float32"):
        return found.get((fix, dtype))

    seed_, norm, stable, he = r("none (the seed)"), r("normalize"), r("stable softmax"), r("He init")
    never = [k[0] for k, v in found.items() if k[1] == "float32" and v["first_nonfinite_step"] is None]
    text = (
        "**Reading.** With raw 0–255 pixels the first layer's pre-activations and its weight gradient "
        f"xᵀδ are about 255·σ ≈ {scale:.0f} times larger than with standardized inputs (σ the pixels' std "
        "on the 0–1 scale), so a single full-batch step at "
        f"learning rate 0.01 moves the logits by hundreds (largest seen: {seed_['max_abs_logit']:.0f} for the "
        "seed in float32). The naive softmax then fails twice over: e^z overflows float32 above z ≈ 88.7 "
        "(float64: 709.8) and inf/inf is NaN; before that, the true class's probability underflows to 0 "
        f"and −log p = inf (the seed's first non-finite loss: step {seed_['first_nonfinite_step'] or 'never'} "
        "in float32). The single fix that removes the blow-up is input normalization: the logits stay small "
        f"(largest {norm['max_abs_logit']:.1f}) and the net learns ({c.pct(norm['test_accuracy'])} test). "
        "The stable softmax removes the non-finite loss but not the oversized steps, so training still "
        f"goes nowhere ({c.pct(stable['test_accuracy'])}); He init makes the first logits larger still "
        f"(NaN parameters from step {he['first_nonfinite_params_step']}); mini-batches add noise to the same "
        "oversized steps; the bias alone changes little. Variants with no non-finite loss in float32: "
        f"{'; '.join(never)}. The seed's own NaN came at step 29 on the full 60k MNIST training set, which "
        "is not available offline here; on these 8000 digits the exact step differs, the mechanism does not.\n"
    )
    return text
