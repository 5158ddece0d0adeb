"""The strongest MLP this library trains (no convolutions, no augmentation), on Fashion-MNIST and on
the real MNIST digits available here."""

import jaxmlp as jm
from experiments import _common as c

# ---- defaults -----------------------------------------------------------------------------------
# Fashion: the best of the configurations tried (benchmarks/RESULTS.md lists the others).
FASHION = dict(hidden=(1024, 1024), batchnorm=True, dropout=0.5, input_dropout=0.0, epochs=80, dev_size=5000)
DIGITS = dict(hidden=(1024, 1024), batchnorm=True, dropout=0.5, input_dropout=0.0, epochs=40)
COMMON = dict(learning_rate=1e-3, schedule="cosine", ema_decay=0.999)
QUICK_EPOCHS = 2
# --------------------------------------------------------------------------------------------------


def train_one(ds, cfg, quick):
    model = jm.MLPConfig(sizes=(784, *cfg["hidden"], 10), batchnorm=cfg["batchnorm"])
    tc = jm.TrainConfig(model=model, schedule=COMMON["schedule"], epochs=QUICK_EPOCHS if quick else cfg["epochs"])
    hyper = jm.Hyper(
        learning_rate=COMMON["learning_rate"],
        ema_decay=COMMON["ema_decay"],
        dropout_rate=cfg["dropout"] or None,
        input_dropout_rate=cfg["input_dropout"] or None,
    )
    return c.fit(ds, tc, hyper), tc


def describe(cfg):
    extra = f", input dropout {cfg['input_dropout']}" if cfg["input_dropout"] else ""
    return (
        f"784-{'-'.join(map(str, cfg['hidden']))}-10 ReLU, batch norm, dropout {cfg['dropout']}{extra}, "
        f"Adam {COMMON['learning_rate']:g} with a cosine schedule, parameter EMA {COMMON['ema_decay']}, batch 128"
    )


def run(quick: bool, out):
    fashion = c.fashion(quick, dev_size=FASHION["dev_size"])
    digits = c.mnist_digits(quick)
    rows = []
    for name, ds, cfg in (("Fashion-MNIST", fashion, FASHION), ("MNIST digits (t10k split)", digits, DIGITS)):
        r, tc = train_one(ds, cfg, quick)
        s = r.summary
        rows.append(
            [
                name,
                f"{ds.x_train.shape[0]} / {ds.x_dev.shape[0]} / {ds.x_test.shape[0]}",
                describe(cfg),
                tc.epochs,
                c.pct(s["dev_accuracy"]) if ds.x_dev.shape[0] else "— (no dev split)",
                c.pct(s["test_accuracy"]),
                f"{s['seconds']:.0f}",
            ]
        )
    return (
        "Fashion-MNIST: the official 60k training set split 55k train / 5k dev (seeded), the official 10k test "
        "set. MNIST: only the real t10k digits are available offline here, so they are split 8000 train / "
        "2000 test (seeded, `jaxmlp.data.load_test_split`); with no dev split, the parameters are the last "
        "epoch's.\n\n"
        + c.table(["data", "train / dev / test", "network", "epochs", "dev acc", "test acc", "train s"], rows)
    )
