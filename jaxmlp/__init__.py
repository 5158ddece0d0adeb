"""jaxmlp: multilayer perceptrons in JAX with hand-derived backward passes, proven against jax.grad.

Everything a script needs is here (``import jaxmlp as jm``) and listed in ``__all__``::

    ds = jm.load_dataset("fashion-mnist")      # or jm.load_data_file("mine.csv"), jm.Dataset.from_arrays(x, y)
    config = jm.MLPConfig(sizes=(784, 512, 512, 10))
    hyper = jm.Hyper(learning_rate=1e-3, dropout_rate=0.3, ema_decay=0.999)
    params, state = jm.init(key, config)
    logits, state = jm.forward(params, state, x, config=config)
    cost, grads, state, aux = jm.loss_and_grads(params, state, (x, y), hyper.as_arrays(), key, config=config)
    tc = jm.TrainConfig(model=config, optimizer="adam", epochs=10)
    result = jm.fit(ds, tc, hyper, out_dir="runs/x")

Layers, top to bottom (each module imports only from below it): ``cli`` → this namespace → ``sweep`` →
``search`` (halving, PBT) → ``run`` (fit) → ``parallel`` → ``report`` (outputs) → ``step`` (pure step /
epoch / evaluate) → ``optim``, ``schedules`` → ``gradcheck`` → ``mlp``, ``rulecheck`` → ``ops``, ``hyper`` → ``data``
(``idx``, ``sources``, ``prepare``, ``tables``, ``batching``), ``checkpoint``, ``compiler`` → ``files`` (the atomic
writer).
Names beginning with ``_`` are internal.
"""

from jaxmlp import data, ops, optim, parallel, schedules, search
from jaxmlp._version import __version__
from jaxmlp.checkpoint import CheckpointError
from jaxmlp.checkpoint import load as load_checkpoint
from jaxmlp.checkpoint import restore as restore_checkpoint
from jaxmlp.checkpoint import save as save_checkpoint
from jaxmlp.compiler import epoch_options
from jaxmlp.data import Dataset, DatasetError, load_dataset, one_hot
from jaxmlp.data import load_file as load_data_file
from jaxmlp.gradcheck import GradReport, check_gradients
from jaxmlp.hyper import Hyper
from jaxmlp.hyper import validate as validate_hyper
from jaxmlp.mlp import (
    MLPConfig,
    autodiff_forward,
    autodiff_loss_and_grads,
    backward,
    cost,
    forward,
    forward_with_caches,
    init,
    loss_and_grads,
    predict,
)
from jaxmlp.rulecheck import (
    RuleReport,
    VjpReport,
    as_custom_jvp,
    as_custom_vjp,
    assert_jvp,
    assert_vjp,
    check_jvp,
    check_vjp,
)
from jaxmlp.run import FitResult, LoadedModel, RunInterrupted, TrainingDiverged, fit, load_model
from jaxmlp.step import (
    TrainConfig,
    TrainState,
    epoch_program,
    eval_params,
    evaluate,
    init_state,
    train_epoch,
    train_step,
)
from jaxmlp.sweep import Member, SweepInterrupted, SweepResult, grid, parse_axis, random_sample, run_sweep

__all__ = [
    # model
    "MLPConfig",
    "Hyper",
    "validate_hyper",
    "init",
    "forward",
    "forward_with_caches",
    "backward",
    "loss_and_grads",
    "predict",
    # the referee (jax.grad) for gradient-equivalence tests
    "cost",
    "autodiff_loss_and_grads",
    "autodiff_forward",
    "check_gradients",
    "GradReport",
    "check_vjp",
    "assert_vjp",
    "as_custom_vjp",
    "check_jvp",
    "assert_jvp",
    "as_custom_jvp",
    "RuleReport",
    "VjpReport",
    # training
    "TrainConfig",
    "TrainState",
    "init_state",
    "train_step",
    "train_epoch",
    "epoch_program",
    "eval_params",
    "evaluate",
    "epoch_options",
    "optim",
    "schedules",
    # runs and checkpoints
    "fit",
    "FitResult",
    "TrainingDiverged",
    "RunInterrupted",
    "load_model",
    "LoadedModel",
    "save_checkpoint",
    "load_checkpoint",
    "restore_checkpoint",
    "CheckpointError",
    # sweeps
    "Member",
    "grid",
    "random_sample",
    "parse_axis",
    "run_sweep",
    "SweepResult",
    "SweepInterrupted",
    # data
    "data",
    "load_data_file",
    "load_dataset",
    "Dataset",
    "DatasetError",
    "one_hot",
    # building blocks
    "ops",
    "parallel",
    "search",
    "__version__",
]
