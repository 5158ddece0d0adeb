"""A learning-rate × L2 heatmap from ONE vmapped sweep (every member in one compiled program)."""

import shutil

import jaxmlp as jm
from experiments import _common as c

# ---- defaults -----------------------------------------------------------------------------------
HIDDEN = (100,)
LEARNING_RATES = "1e-4:1e-1:log:7"
L2S = "0,0.1,1,3,10"
SEEDS = 2
EPOCHS, QUICK_EPOCHS = 5, 1
# --------------------------------------------------------------------------------------------------


def run(quick: bool, out):
    ds = c.fashion(quick)
    axes = {"learning_rate": jm.parse_axis(LEARNING_RATES), "l2": jm.parse_axis(L2S)}
    members = jm.grid(jm.Hyper(), axes, seeds=SEEDS, hidden=[HIDDEN])
    tc = jm.TrainConfig(model=jm.MLPConfig(sizes=(784, *HIDDEN, 10)), epochs=QUICK_EPOCHS if quick else EPOCHS)
    work = out / "sweep_lr_l2_run"
    res = jm.run_sweep(ds, tc, members, axes=list(axes), out_dir=work, log=lambda s: None)
    shutil.copy(work / "heatmap.png", out / "sweep_lr_l2.png")
    shutil.rmtree(work)
    s, b = res.summary, res.summary["best"]
    return (
        f"784-100-10 ReLU, Adam, batch 128, {tc.epochs} epochs; {s['members']} members "
        f"({len(axes['learning_rate'])} learning rates × {len(axes['l2'])} L2 values × {SEEDS} seeds) trained "
        f"as one vmapped program in {s['seconds']:.1f} s ({s['examples_per_second']:.0f} examples/s over all "
        f"members; compile {s['compile_seconds']:.1f} s). Best: learning rate {b['learning_rate']:.3g}, "
        f"L2 {b['l2']:g}, seed {b['seed']}: dev {c.pct(b['dev_accuracy'])}, test {c.pct(b['test_accuracy'])}; "
        f"{s['diverged']} diverged.\n\n![learning rate × L2](sweep_lr_l2.png)\n"
    )
