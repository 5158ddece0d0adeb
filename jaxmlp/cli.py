"""The jaxmlp command: train, evaluate, sweep, gradcheck.

Every expected failure (bad option, bad data, bad checkpoint, divergence) prints one line
``jaxmlp: error: …`` on stderr and exits non-zero, without a traceback. The commands call the public
API (``import jaxmlp as jm``) and nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_ERROR = 2
EXIT_DIVERGED = 3
EXIT_GRADCHECK = 1


def _hidden(text: str) -> tuple:
    """'512,512' -> (512, 512); 'none' -> () (softmax regression). Empty or zero widths are errors."""
    if text.strip().lower() == "none":
        return ()
    parts = [p.strip() for p in text.split(",")]
    if any(p == "" for p in parts):
        raise argparse.ArgumentTypeError(
            f"empty hidden layer width in {text!r}: give widths like 512,512 (or none for softmax regression)"
        )
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated widths like 512,512, not {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden widths must be ≥ 1, got {text!r}")
    return sizes


def _network_options(p: argparse.ArgumentParser, dropout: float = 0.0) -> None:
    g = p.add_argument_group("network")
    g.add_argument(
        "--hidden",
        type=_hidden,
        default=(512, 512),
        help="hidden widths, comma-separated (default 512,512; none for softmax regression)",
    )
    g.add_argument("--activation", default="relu", help="relu | tanh | sigmoid (default relu)")
    g.add_argument(
        "--dropout",
        type=float,
        default=dropout,
        help="dropout rate = P(drop) after each hidden layer; 0: none (default %(default)g)",
    )
    g.add_argument("--input-dropout", type=float, default=0.0, help="dropout rate on the input pixels (0)")
    g.add_argument("--batchnorm", action="store_true", help="batch normalization before activations")
    g.add_argument("--bn-momentum", type=float, default=0.9, help="running-average momentum (0.9)")
    g.add_argument("--l2", type=float, default=0.0, help="λ of the (λ/2m)Σ‖W‖² penalty (default 0)")
    g.add_argument("--init", default="he", help="he | xavier | seed (randn*0.01) (default he)")
    g.add_argument("--init-scale", type=float, default=1.0, help="multiplies the init std (1)")
    g.add_argument("--seed", type=int, default=0, help="seed for init, data split and shuffles (0)")


def _speed_options(g) -> None:
    g.add_argument(
        "--matmul-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="bfloat16: mixed precision, bf16 matmul operands with float32 accumulation, "
        "weights and loss (fast on GPUs/TPUs; slower on most CPUs) (default float32)",
    )
    g.add_argument(
        "--scan-unroll",
        type=int,
        default=1,
        help="training steps per iteration of the epoch's compiled loop (default 1)",
    )


def _model_config(args, d_in: int, d_out: int, hidden=None):
    import jaxmlp as jm

    return jm.MLPConfig(
        sizes=(d_in, *(args.hidden if hidden is None else hidden), d_out),
        activation=args.activation,
        batchnorm=args.batchnorm,
        init=args.init,
        matmul_dtype=getattr(args, "matmul_dtype", "float32"),
    )


def _train_config(args, model):
    import jaxmlp as jm

    return jm.TrainConfig(
        model=model,
        optimizer=args.optimizer,
        schedule=args.schedule,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=getattr(args, "patience", 0),
        seed=args.seed,
        scan_unroll=args.scan_unroll,
    )


def _off_if_zero(v):
    """A rate of 0 given on the command line means the op is absent (Hyper's None), not computed at 0."""
    return None if v is None or v == 0 else v


def _hyper(args):
    import jaxmlp as jm

    h = jm.Hyper(
        dropout_rate=_off_if_zero(args.dropout),
        input_dropout_rate=_off_if_zero(args.input_dropout),
        ema_decay=_off_if_zero(getattr(args, "ema", None)),
        l2=args.l2,
        bn_momentum=args.bn_momentum,
        init_scale=args.init_scale,
        **{
            k: getattr(args, k)
            for k in (
                "learning_rate",
                "momentum",
                "b1",
                "b2",
                "eps",
                "rho",
                "weight_decay",
                "decay_rate",
                "decay_steps",
                "warmup_steps",
                "final_lr_fraction",
            )
            if getattr(args, k, None) is not None
        },
    )
    jm.validate(h)
    return h


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxmlp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an MLP and write metrics, curves, checkpoint, summary")
    d = t.add_argument_group("data")
    d.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    d.add_argument("--data-dir", default=None, help="folder with the four IDX files")
    d.add_argument("--dev-size", type=int, default=10_000, help="examples held out of train (10000)")
    _network_options(t, dropout=0.3)
    o = t.add_argument_group("optimization")
    o.add_argument(
        "--optimizer", default="adam", help="sgd | momentum | nesterov | rmsprop | adam | adamw (default %(default)s)"
    )
    o.add_argument("--learning-rate", type=float, default=1e-3, help="(default %(default)g)")
    o.add_argument("--momentum", type=float, default=None, help="μ for momentum/nesterov (0.9)")
    o.add_argument("--b1", type=float, default=None, help="Adam β₁ (0.9)")
    o.add_argument("--b2", type=float, default=None, help="Adam β₂ (0.999)")
    o.add_argument("--eps", type=float, default=None, help="Adam/RMSprop ε (1e-8)")
    o.add_argument("--rho", type=float, default=None, help="RMSprop decay (0.9)")
    o.add_argument("--weight-decay", type=float, default=None, help="AdamW decoupled decay (0)")
    o.add_argument("--schedule", default="cosine", help="constant | exponential | step | cosine (default %(default)s)")
    o.add_argument("--decay-rate", type=float, default=None, help="exponential/step factor (0.5)")
    o.add_argument("--decay-steps", type=float, default=None, help="exponential/step period (1000)")
    o.add_argument("--warmup-steps", type=float, default=None, help="linear warmup steps (0)")
    o.add_argument("--final-lr-fraction", type=float, default=None, help="cosine floor (0)")
    o.add_argument(
        "--ema",
        type=float,
        default=0.999,
        metavar="DECAY",
        help="evaluate with an exponential moving average of the parameters with this decay; "
        "0: none (default %(default)g)",
    )
    o.add_argument("--batch-size", type=int, default=128, help="(default %(default)d)")
    o.add_argument("--epochs", type=int, default=30, help="(default %(default)d)")
    o.add_argument("--patience", type=int, default=0, help="early-stopping patience in epochs (0: off)")
    _speed_options(o)
    r = t.add_argument_group("output")
    r.add_argument("--out", default="runs/default", help="output folder (default runs/default)")
    r.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument(
        "--data-parallel",
        action="store_true",
        help="shard each batch over all devices (batch size a multiple of the device count)",
    )

    e = sub.add_parser("evaluate", help="accuracy of a saved model")
    e.add_argument("checkpoint")
    e.add_argument(
        "--dataset", default=None, choices=["fashion-mnist", "mnist"], help="default: the dataset it was trained on"
    )
    e.add_argument("--data-dir", default=None)
    e.add_argument("--split", default="test", choices=["test", "dev", "train"])

    w = sub.add_parser("sweep", help="train many settings as one compiled vmapped program")
    d = w.add_argument_group("data")
    d.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    d.add_argument("--data-dir", default=None)
    d.add_argument("--dev-size", type=int, default=10_000)
    a = w.add_argument_group("axes: each takes one value, a list 0,1e-4,1e-3, or a range 1e-4:1e-1:log:8")
    a.add_argument(
        "--hidden", default="100", help="hidden widths; alternatives separated by '/', e.g. 64/128/256 or 64,64/128,128"
    )
    for name, default in SWEEP_AXES.items():
        a.add_argument(f"--{name.replace('_', '-')}", default=default, dest=name)
    w.add_argument("--seeds", type=int, default=1, help="seeds per setting (default 1)")
    w.add_argument(
        "--random",
        type=int,
        default=None,
        metavar="N",
        help="draw N random points within each axis' range instead of the grid",
    )
    w.add_argument(
        "--per-member-shuffle",
        action="store_true",
        help="each member shuffles the data with its own key (default: one shared order)",
    )
    w.add_argument("--chunk-size", type=int, default=None, help="members per compiled run (default all)")
    w.add_argument("--activation", default="relu")
    w.add_argument("--batchnorm", action="store_true")
    w.add_argument("--init", default="he")
    w.add_argument("--optimizer", default="adam")
    w.add_argument("--schedule", default="constant")
    w.add_argument("--batch-size", type=int, default=128)
    _speed_options(w)
    w.add_argument("--epochs", type=int, default=5)
    w.add_argument("--seed", type=int, default=0, help="data split and shared data order")
    w.add_argument("--out", default="runs/sweep")

    g = sub.add_parser("gradcheck", help="hand-derived gradients vs jax.grad and finite differences")
    _network_options(g)
    g.add_argument("--input-dim", type=int, default=784)
    g.add_argument("--classes", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--fd-samples", type=int, default=64, help="coordinates per array for finite differences")
    g.add_argument("--float32", action="store_true", help="check in float32 (no finite differences)")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def cmd_train(args) -> int:
    import jaxmlp as jm

    hyper = _hyper(args)
    ds = jm.load_dataset(args.dataset, args.data_dir, dev_size=args.dev_size, seed=args.seed)
    tc = _train_config(args, _model_config(args, ds.x_train.shape[1], ds.num_classes))
    print(
        f"{ds.name}: {ds.x_train.shape[0]} train / {ds.x_dev.shape[0]} dev / {ds.x_test.shape[0]} test; "
        f"network {'-'.join(map(str, tc.model.sizes))} {tc.model.activation}, {tc.optimizer} "
        f"lr {args.learning_rate:g}, batch {tc.batch_size}, {tc.epochs} epochs → {args.out}"
    )
    result = jm.fit(
        ds,
        tc,
        hyper,
        out_dir=args.out,
        resume=args.resume,
        progress=not args.no_progress,
        data_parallel=args.data_parallel,
    )
    s = result.summary
    print(
        f"{s['examples_per_second']:.0f} training examples/s (compile {s['compile_seconds']:.1f}s excluded); "
        f"wrote {args.out}/summary.json"
    )
    return 0


def cmd_evaluate(args) -> int:
    import jaxmlp as jm

    tc, _, params, bn_state, norm, meta = jm.load_model(args.checkpoint)
    name = args.dataset or meta.get("dataset", "fashion-mnist")
    files = jm.data.find_files(name, args.data_dir)
    if args.split == "test":
        images, labels = jm.data.read_pair(files["test_images"], files["test_labels"])
    else:
        images, labels = jm.data.read_pair(files["train_images"], files["train_labels"])
        dev_size = int(meta.get("dev_size", 10_000))
        xtr, ytr, xdev, ydev = jm.data.split_train_dev(images, labels, dev_size, tc.seed)
        images, labels = (xdev, ydev) if args.split == "dev" else (xtr, ytr)
    x = norm(images)
    if x.shape[1] != tc.model.sizes[0]:
        raise ValueError(f"{args.checkpoint} expects {tc.model.sizes[0]} features, data has {x.shape[1]}")
    acc, loss = jm.evaluate(params, bn_state, x, labels, config=tc.model)
    print(f"{name} {args.split}: accuracy {acc:.4f}  loss {loss:.4f}  ({len(labels)} examples)")
    return 0


# option name -> default; each a Hyper field (``SWEEP_FIELDS`` where the names differ)
SWEEP_AXES = {
    "learning_rate": "1e-3",
    "l2": "0",
    "dropout": None,
    "input_dropout": None,
    "ema": None,
    "momentum": None,
    "b1": None,
    "b2": None,
    "eps": None,
    "rho": None,
    "weight_decay": None,
    "bn_momentum": None,
    "init_scale": None,
}
SWEEP_FIELDS = {"dropout": "dropout_rate", "input_dropout": "input_dropout_rate", "ema": "ema_decay"}


def cmd_sweep(args) -> int:
    import jaxmlp as jm

    axes = {}
    for name in SWEEP_AXES:
        text = getattr(args, name)
        if text is not None:
            axes[SWEEP_FIELDS.get(name, name)] = jm.parse_axis(text)
    try:
        hidden = [_hidden(h) for h in args.hidden.split("/")]
    except argparse.ArgumentTypeError as e:
        raise ValueError(str(e)) from None
    swept = [n for n, v in axes.items() if len(v) > 1]
    fixed = {n: v[0] for n, v in axes.items() if len(v) == 1}
    fixed.update({n: _off_if_zero(fixed[n]) for n in SWEEP_FIELDS.values() if n in fixed})
    base = jm.Hyper()._replace(**fixed)
    if args.random:
        log_axes = [n for n in swept if min(axes[n]) > 0 and max(axes[n]) / min(axes[n]) >= 10]
        members = jm.random_sample(
            base,
            {n: axes[n] for n in swept},
            args.random,
            seeds=args.seeds,
            hidden=hidden,
            seed=args.seed,
            log_axes=log_axes,
        )
    else:
        members = jm.grid(base, {n: axes[n] for n in swept}, seeds=args.seeds, hidden=hidden)
    ds = jm.load_dataset(args.dataset, args.data_dir, dev_size=args.dev_size, seed=args.seed)
    tc = _train_config(args, _model_config(args, ds.x_train.shape[1], ds.num_classes, hidden=hidden[0]))
    print(
        f"{ds.name}: {len(members)} members ({', '.join(swept) or 'no axes'}"
        f"{', hidden' if len(hidden) > 1 else ''} × {args.seeds} seeds), {tc.epochs} epochs → {args.out}"
    )
    res = jm.run_sweep(
        ds,
        tc,
        members,
        chunk_size=args.chunk_size,
        shared_order=not args.per_member_shuffle,
        data_seed=args.seed,
        axes=swept,
        out_dir=args.out,
    )
    s, b = res.summary, res.summary["best"]
    if b is not None:
        print(
            f"best member {b['member']}: dev {b['dev_accuracy']:.4f}, test {b['test_accuracy']:.4f} "
            f"({', '.join(f'{n}={b[n]:g}' for n in swept)}{', hidden=' + b['hidden'] if len(hidden) > 1 else ''})"
        )
    print(
        f"{s['diverged']} diverged; {s['examples_per_second']:.0f} examples/s over all members "
        f"(compile {s['compile_seconds']:.1f}s excluded); wrote {args.out}/results.csv"
    )
    return 0


def cmd_gradcheck(args) -> int:
    import jax

    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    import jaxmlp as jm
    from jaxmlp.gradcheck import FD_TOL

    config = _model_config(args, args.input_dim, args.classes)
    hyper = _hyper(argparse.Namespace(**{**vars(args), "learning_rate": 1.0}))
    report = jm.check_gradients(
        config,
        hyper,
        key=jax.random.PRNGKey(args.seed),
        batch_size=args.batch_size,
        fd_samples=None if args.float32 else args.fd_samples,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"network {'-'.join(map(str, config.sizes))} {config.activation}, dropout {args.dropout:g}, "
            f"batchnorm {'on' if config.batchnorm else 'off'}, l2 {args.l2:g}, init {config.init}; "
            f"{report.dtype}, batch {args.batch_size}"
        )
        print(f"{'array':<14}{'shape':<14}{'vs jax.grad':>14}{'vs finite diff':>16}")
        for r in report.arrays:
            fd = r.get("rel_diff_vs_finite_differences")
            print(
                f"{r['name']:<14}{'x'.join(map(str, r['shape'])):<14}{r['rel_error_vs_autodiff']:>14.2e}"
                f"{'' if fd is None else format(fd, '.2e'):>16}"
            )
        fd = report.max_rel_diff_vs_finite_differences
        print(
            f"max: {report.max_rel_error_vs_autodiff:.2e} vs jax.grad (tolerance {report.autodiff_tol:g})"
            + ("" if fd is None else f", {fd:.2e} vs finite differences (tolerance {FD_TOL:g})")
            + ("  OK" if report.ok else "  FAILED")
        )
    return 0 if report.ok else EXIT_GRADCHECK


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from jaxmlp import CheckpointError, DatasetError, TrainingDiverged

    try:
        commands = {"train": cmd_train, "evaluate": cmd_evaluate, "gradcheck": cmd_gradcheck, "sweep": cmd_sweep}
        return commands[args.command](args)
    except TrainingDiverged as e:
        print(f"jaxmlp: error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except (DatasetError, CheckpointError, ValueError) as e:
        print(f"jaxmlp: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("jaxmlp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
