"""A grid, successive halving and PBT with the same compute budget: which finds the better net?

Each search runs as `jm.run_sweep` over one learning-rate × dropout space on Fashion-MNIST (50k train /
10k dev / 10k test), 784-256-256-10 ReLU, Adam with a cosine schedule, batch 128, and spends about
the same number of member-epochs (one member trained for one epoch): the grid trains 16 points for
12 epochs; halving draws 64 random points and keeps the best third at rungs after 1, 3, 9 and 27
epochs; PBT trains 16 random points for 12 epochs and every 2 epochs replaces the bottom quarter with
perturbed copies of the top quarter. Dev accuracy picks; the test accuracy is the picked member's."""

import jaxmlp as jm
from experiments import _common as c

# ---- defaults -----------------------------------------------------------------------------------
HIDDEN = (256, 256)
SPACE = {"learning_rate": (1e-4, 1e-2), "dropout_rate": (0.0, 0.6)}
GRID = {"learning_rate": "1e-4:1e-2:log:4", "dropout_rate": "0:0.6:lin:4"}
GRID_EPOCHS, PBT_MEMBERS, PBT_EPOCHS, PBT_INTERVAL = 12, 16, 12, 2
HALVING_MEMBERS, HALVING_EPOCHS, ETA = 64, 27, 3
QUICK = dict(hidden=(32,), grid="1e-3,1e-2", grid_epochs=3, members=8, epochs=3, halving_members=9, halving_epochs=3)
# --------------------------------------------------------------------------------------------------


def searches(quick):
    """(name, members, epochs, run_sweep options) of the three searches."""
    q = QUICK if quick else None
    lr = jm.parse_axis(q["grid"] if quick else GRID["learning_rate"])
    dropout = jm.parse_axis("0,0.3" if quick else GRID["dropout_rate"])
    hidden = QUICK["hidden"] if quick else HIDDEN
    grid = jm.grid(jm.Hyper(), {"learning_rate": lr, "dropout_rate": dropout}, hidden=[hidden])
    n_pbt, n_halving = (q["members"], q["halving_members"]) if quick else (PBT_MEMBERS, HALVING_MEMBERS)

    def draw(n, seed):
        return jm.random_sample(jm.Hyper(), SPACE, n, hidden=[hidden], seed=seed, log_axes=["learning_rate"])

    return [
        ("grid", grid, q["grid_epochs"] if quick else GRID_EPOCHS, {}),
        ("successive halving", draw(n_halving, 1), q["halving_epochs"] if quick else HALVING_EPOCHS, {"halving": ETA}),
        ("PBT", draw(n_pbt, 2), q["epochs"] if quick else PBT_EPOCHS, {"pbt": 1 if quick else PBT_INTERVAL}),
    ]


def run(quick: bool, out):
    import time

    ds = c.fashion(quick)
    rows = []
    for name, members, epochs, how in searches(quick):
        tc = jm.TrainConfig(model=jm.MLPConfig(sizes=(784, *members[0].hidden, 10)), schedule="cosine", epochs=epochs)
        t = time.perf_counter()
        res = jm.run_sweep(ds, tc, members, axes=list(SPACE), log=lambda s: None, **how)
        seconds = time.perf_counter() - t
        s, b = res.summary, res.summary["best"]
        picked = f"lr {b['final_learning_rate' if 'pbt' in how else 'learning_rate']:.2g}, dropout " + (
            f"{b['final_dropout_rate' if 'pbt' in how else 'dropout_rate']:.2f}"
        )
        rows.append(
            [
                name,
                s["members"],
                epochs,
                s["member_epochs"],
                c.pct(b["dev_accuracy"]),
                c.pct(b["test_accuracy"]),
                picked,
                f"{seconds:.0f}",
            ]
        )
    return c.table(
        ["search", "members", "epochs", "member-epochs", "best dev", "its test", "picked", "wall s"], rows
    ) + (
        "\n\nwall s: the whole search (compiles, the layout probe, training, evaluation), one after another on "
        "this machine. The picked values are the member's at the end (PBT's perturbed ones).\n"
    )
