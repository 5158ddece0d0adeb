"""None, L2, dropout, batch norm and their combinations: what each does to the train/dev gap."""

import jaxmlp as jm
from experiments import _common as c

# ---- defaults -----------------------------------------------------------------------------------
HIDDEN = (512, 512)
EPOCHS, QUICK_EPOCHS = 20, 2
L2 = 1.0  # λ in (λ/2m)Σ‖W‖², m = batch size 128
DROPOUT = 0.3
VARIANTS = [
    ("none", {}),
    ("L2", {"l2": True}),
    ("dropout", {"dropout": True}),
    ("batch norm", {"bn": True}),
    ("L2 + dropout", {"l2": True, "dropout": True}),
    ("dropout + batch norm", {"dropout": True, "bn": True}),
    ("L2 + dropout + batch norm", {"l2": True, "dropout": True, "bn": True}),
]
# --------------------------------------------------------------------------------------------------


def run(quick: bool, out):
    ds = c.fashion(quick)
    epochs = QUICK_EPOCHS if quick else EPOCHS
    rows, gaps = [], []
    for name, v in VARIANTS[::3] if quick else VARIANTS:  # quick: none, batch norm, all three
        model = jm.MLPConfig(sizes=(784, *HIDDEN, 10), batchnorm=bool(v.get("bn")))
        hyper = jm.Hyper(
            learning_rate=1e-3, l2=L2 if v.get("l2") else 0.0, dropout_rate=DROPOUT if v.get("dropout") else None
        )
        r = c.fit(ds, jm.TrainConfig(model=model, epochs=epochs), hyper)
        # train accuracy in evaluation mode on as many training examples as the dev set has
        n = ds.x_dev.shape[0]
        train_acc, _ = jm.evaluate(r.best_params, r.best_bn_state, ds.x_train[:n], ds.y_train[:n], config=model)
        dev_acc = r.summary["dev_accuracy"]
        rows.append(
            [
                name,
                c.pct(train_acc),
                c.pct(dev_acc),
                f"{100 * (train_acc - dev_acc):.2f}",
                c.pct(r.summary["test_accuracy"]),
                r.summary["best_epoch"],
            ]
        )
        gaps.append((name, train_acc, dev_acc))
    plt = c.plt()
    fig, ax = plt.subplots(figsize=(10, 4))
    xs = range(len(gaps))
    ax.bar([x - 0.2 for x in xs], [g[1] for g in gaps], 0.4, label="train (eval mode)")
    ax.bar([x + 0.2 for x in xs], [g[2] for g in gaps], 0.4, label="dev")
    ax.set_xticks(list(xs), [g[0] for g in gaps], rotation=20, ha="right", fontsize=8)
    lo = min(min(g[1], g[2]) for g in gaps)
    ax.set(ylim=(max(0.0, lo - 0.05), 1.0), ylabel="accuracy", title="Train vs dev accuracy at the best dev epoch")
    ax.legend()
    fig_name = c.savefig(fig, out, "regularization.png")
    return (
        f"784-512-512-10 ReLU, Adam 1e-3, batch 128, {epochs} epochs; L2 λ = {L2:g} (cost (λ/2m)Σ‖W‖², "
        f"m = 128), dropout rate {DROPOUT}. Parameters from the best dev epoch; train accuracy measured in "
        f"evaluation mode on {ds.x_dev.shape[0]} training examples.\n\n"
        + c.table(["regularization", "train acc", "dev acc", "gap (points)", "test acc", "best epoch"], rows)
        + f"\n![regularization]({fig_name})\n"
    )
