"""SGD, momentum, Nesterov, RMSprop, Adam — each with and without parameter EMA, each at its own best
learning rate found by one vmapped sweep per optimizer."""

import numpy as np

import jaxmlp as jm
from experiments import _common as c

# ---- defaults -----------------------------------------------------------------------------------
HIDDEN = (256,)
OPTIMIZERS = ["sgd", "momentum", "nesterov", "rmsprop", "adam"]
QUICK_OPTIMIZERS = ["nesterov", "adam"]
LR_GRID = np.geomspace(1e-4, 1.0, 9).tolist()  # swept per optimizer in one program
SWEEP_EPOCHS, QUICK_SWEEP_EPOCHS = 3, 1
EPOCHS, QUICK_EPOCHS = 12, 2
EMA_DECAY = 0.999
# --------------------------------------------------------------------------------------------------


def run(quick: bool, out):
    ds = c.fashion(quick)
    model = jm.MLPConfig(sizes=(784, *HIDDEN, 10))
    plt = c.plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    rows = []
    for opt in QUICK_OPTIMIZERS if quick else OPTIMIZERS:
        tc = jm.TrainConfig(model=model, optimizer=opt, epochs=QUICK_SWEEP_EPOCHS if quick else SWEEP_EPOCHS)
        members = jm.grid(jm.Hyper(), {"learning_rate": LR_GRID}, hidden=[HIDDEN])
        res = jm.run_sweep(ds, tc, members, axes=["learning_rate"], log=lambda s: None)
        ok = [r for r in res.rows if not r["diverged"]]
        best_lr = max(ok, key=lambda r: r["dev_accuracy"])["learning_rate"]
        for ax, ema in zip(axes, (False, True)):
            tc = jm.TrainConfig(model=model, optimizer=opt, epochs=QUICK_EPOCHS if quick else EPOCHS)
            r = c.fit(ds, tc, jm.Hyper(learning_rate=best_lr, ema_decay=EMA_DECAY if ema else None))
            ax.plot(
                [h["epoch"] for h in r.history],
                [h["dev_accuracy"] for h in r.history],
                label=f"{opt} (lr {best_lr:.2g})",
            )
            rows.append(
                [
                    opt,
                    f"{best_lr:.3g}",
                    "on" if ema else "off",
                    c.pct(r.summary["dev_accuracy"]),
                    c.pct(r.summary["test_accuracy"]),
                    res.summary["diverged"],
                ]
            )
    for ax, ema in zip(axes, ("without EMA", f"evaluated with parameter EMA {EMA_DECAY}")):
        ax.set(xlabel="epoch", ylabel="dev accuracy", title=ema)
        ax.legend(fontsize=8)
    name = c.savefig(fig, out, "optimizers.png")
    return (
        f"784-{HIDDEN[0]}-10 ReLU, batch 128. Each optimizer's learning rate is the best on dev of "
        f"{len(LR_GRID)} log-spaced values in [{LR_GRID[0]:g}, {LR_GRID[-1]:g}], all trained as one vmapped "
        f"sweep ({QUICK_SWEEP_EPOCHS if quick else SWEEP_EPOCHS} epochs); then "
        f"{QUICK_EPOCHS if quick else EPOCHS} epochs at that rate, without and with EMA.\n\n"
        + c.table(["optimizer", "best lr", "EMA", "best dev acc", "test acc", "diverged in lr sweep"], rows)
        + f"\n![optimizers]({name})\n"
    )
