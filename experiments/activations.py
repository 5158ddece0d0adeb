"""Sigmoid vs tanh vs ReLU: learning curves and final dev accuracy on Fashion-MNIST."""

import jaxmlp as jm
from experiments import _common as c

# ---- defaults -----------------------------------------------------------------------------------
HIDDEN = (256, 256)
EPOCHS, QUICK_EPOCHS = 15, 2
LEARNING_RATE = 1e-3  # Adam
ACTIVATIONS = [("sigmoid", "xavier"), ("tanh", "xavier"), ("relu", "he")]  # each with its usual init
# --------------------------------------------------------------------------------------------------


def run(quick: bool, out):
    ds = c.fashion(quick)
    epochs = QUICK_EPOCHS if quick else EPOCHS
    plt = c.plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    rows = []
    for act, init in ACTIVATIONS:
        tc = jm.TrainConfig(
            model=jm.MLPConfig(sizes=(784, *HIDDEN, 10), activation=act, init=init), optimizer="adam", epochs=epochs
        )
        r = c.fit(ds, tc, jm.Hyper(learning_rate=LEARNING_RATE))
        ep = [h["epoch"] for h in r.history]
        a.plot(ep, [h["train_loss"] for h in r.history], label=act)
        b.plot(ep, [h["dev_accuracy"] for h in r.history], label=act)
        rows.append(
            [
                act,
                init,
                c.pct(r.history[-1]["dev_accuracy"]),
                c.pct(r.summary["dev_accuracy"]),
                r.summary["best_epoch"],
                f"{r.history[-1]['train_loss']:.4f}",
            ]
        )
    a.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    b.set(xlabel="epoch", ylabel="dev accuracy", title="Dev accuracy")
    a.legend(), b.legend()
    name = c.savefig(fig, out, "activations.png")
    return (
        f"784-{'-'.join(map(str, HIDDEN))}-10, Adam {LEARNING_RATE:g}, batch 128, {epochs} epochs, "
        f"{ds.x_train.shape[0]} training examples.\n\n"
        + c.table(["activation", "init", "final dev acc", "best dev acc", "best epoch", "final train loss"], rows)
        + f"\n![activations]({name})\n"
    )
