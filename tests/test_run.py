"""The run loop: fit's files, best parameters, early stopping, divergence, resume, mixed precision."""

import csv
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmlp
from jaxmlp import checkpoint, data, run, step
from jaxmlp.hyper import Hyper
from jaxmlp.mlp import MLPConfig

from helpers import leaves_equal, make_idx_dataset, small_tc


def test_fit_learns_and_writes_its_files(tiny, tmp_path):
    tc = small_tc(epochs=8)
    res = run.fit(tiny, tc, Hyper(learning_rate=3e-3), out_dir=tmp_path, progress=False, log=lambda s: None)
    assert res.summary["test_accuracy"] > 0.9  # separable toy problem: chance is 0.1
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 8 and {"epoch", "train_loss", "dev_accuracy", "seconds"} <= set(rows[0])
    summary = json.loads((tmp_path / "summary.json").read_text())
    for k in ("test_accuracy", "dev_accuracy", "epochs", "seconds", "examples_per_second", "config"):
        assert k in summary
    assert summary["examples_per_second"] > 0 and summary["config"]["model"]["sizes"] == [16, 32, 10]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tc2, _, params, bn_state, norm, meta = run.load_model(tmp_path / "checkpoint.npz")
    assert tc2 == tc and norm == tiny.normalizer
    acc, _ = step.evaluate(params, bn_state, tiny.x_test, tiny.y_test, config=tc.model)
    assert acc == pytest.approx(res.summary["test_accuracy"])


def test_best_parameters_are_saved_with_ema_and_batchnorm(tiny, tmp_path):
    tc = small_tc(epochs=3, model=MLPConfig(sizes=(16, 32, 10), batchnorm=True))
    res = run.fit(
        tiny, tc, Hyper(learning_rate=3e-3, ema_decay=0.9), out_dir=tmp_path, progress=False, log=lambda s: None
    )
    best_epoch = res.summary["best_epoch"]
    assert res.summary["dev_accuracy"] == max(r["dev_accuracy"] for r in res.history)
    assert res.history[best_epoch - 1]["dev_accuracy"] == res.summary["dev_accuracy"]
    _, _, params, bn_state, _, _ = run.load_model(tmp_path / "checkpoint.npz")
    assert leaves_equal(params, res.best_params) and leaves_equal(bn_state, res.best_bn_state)


def test_early_stopping_on_dev_accuracy(tiny):
    tc = small_tc(epochs=50, patience=2)
    res = run.fit(tiny, tc, Hyper(learning_rate=3e-3), progress=False, log=lambda s: None)
    assert res.summary["stopped_early"] and res.summary["epochs"] < 50
    assert res.summary["epochs"] == res.summary["best_epoch"] + 2


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    # the learning rate grows ×1e6 per epoch (16 steps): epoch 1 trains, later ones overflow
    tc = small_tc(epochs=6, optimizer="sgd", schedule="exponential")
    hyper = Hyper(learning_rate=0.05, decay_rate=1e6, decay_steps=16)
    with pytest.raises(
        run.TrainingDiverged,
        match=r"non-finite at epoch (\d+), step (\d+) .*lower the "
        r"learning rate.*last good checkpoint",
    ) as e:
        run.fit(tiny, tc, hyper, out_dir=tmp_path, progress=False, log=lambda s: None)
    assert "\n" not in str(e.value)
    meta, arrays = checkpoint.load(tmp_path / "checkpoint.npz")
    assert 1 <= meta["epoch"] < 6
    assert all(np.isfinite(a).all() for k, a in arrays.items() if a.dtype.kind == "f")


def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny, tmp_path):
    model = MLPConfig(sizes=(16, 32, 10), batchnorm=True)
    hyper = Hyper(learning_rate=3e-3, dropout_rate=0.2, ema_decay=0.999)
    full = run.fit(
        tiny, small_tc(epochs=4, model=model), hyper, out_dir=tmp_path / "a", progress=False, log=lambda s: None
    )
    run.fit(tiny, small_tc(epochs=2, model=model), hyper, out_dir=tmp_path / "b", progress=False, log=lambda s: None)
    resumed = run.fit(
        tiny,
        small_tc(epochs=4, model=model),
        hyper,
        out_dir=tmp_path / "b",
        resume=True,
        progress=False,
        log=lambda s: None,
    )
    assert leaves_equal(full.state, resumed.state)
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


def test_resume_with_more_epochs_extends_the_cosine_horizon(tiny, tmp_path):
    """A 2-epoch cosine run resumed with epochs=3 trains epoch 3 on the 3-epoch schedule (not at
    learning rate 0, the decayed end of the 2-epoch one)."""
    hyper = Hyper(learning_rate=3e-3)
    short = run.fit(
        tiny, small_tc(epochs=2, schedule="cosine"), hyper, out_dir=tmp_path / "a", progress=False, log=lambda s: None
    )
    longer = run.fit(
        tiny,
        small_tc(epochs=3, schedule="cosine"),
        hyper,
        out_dir=tmp_path / "a",
        resume=True,
        progress=False,
        log=lambda s: None,
    )
    full = run.fit(tiny, small_tc(epochs=3, schedule="cosine"), hyper, progress=False, log=lambda s: None)
    steps = tiny.x_train.shape[0] // 50
    assert longer.summary["hyper"]["total_steps"] == full.summary["hyper"]["total_steps"] == 3 * steps
    assert longer.history[2]["learning_rate"] == full.history[2]["learning_rate"] > 0
    assert not leaves_equal(short.state.params, longer.state.params)  # epoch 3 moved the weights


def test_resume_refuses_a_different_configuration(tiny, tmp_path):
    run.fit(tiny, small_tc(epochs=1), Hyper(), out_dir=tmp_path, progress=False, log=lambda s: None)
    # the message names each differing option and both values (it used to say only "different configuration")
    with pytest.raises(
        checkpoint.CheckpointError, match=r"different structure: --optimizer adam \(checkpoint\) vs sgd "
    ):
        run.fit(
            tiny,
            small_tc(epochs=2, optimizer="sgd"),
            Hyper(),
            out_dir=tmp_path,
            resume=True,
            progress=False,
            log=lambda s: None,
        )
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        run.fit(
            tiny,
            small_tc(epochs=2),
            Hyper(),
            out_dir=tmp_path / "none",
            resume=True,
            progress=False,
            log=lambda s: None,
        )


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(batch_size=5000), "batch size 5000 is larger than the 800 training examples"),
        (dict(model=MLPConfig(sizes=(20, 10))), "does not fit data with 16 features"),
    ],
)
def test_fit_rejects_mismatches(tiny, kw, message):
    with pytest.raises(ValueError, match=message):
        run.fit(tiny, small_tc(**kw), Hyper(), progress=False, log=lambda s: None)


def test_mixed_precision_fit_learns_and_keeps_float32_state(tiny, tmp_path):
    """bfloat16 matmuls train the toy problem as float32 does (> 0.9; chance 0.1), the parameters,
    optimizer state and checkpoint stay float32, and the config records the mode."""
    tc = small_tc(epochs=8, model=MLPConfig(sizes=(16, 32, 10), matmul_dtype="bfloat16"))
    res = run.fit(tiny, tc, Hyper(learning_rate=3e-3), out_dir=tmp_path, progress=False, log=lambda s: None)
    assert res.summary["test_accuracy"] > 0.9
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves((res.state.params, res.state.opt_state.mu)))
    tc2, _, params, _, _, _ = run.load_model(tmp_path / "checkpoint.npz")
    assert tc2.model.matmul_dtype == "bfloat16" and params[0]["W"].dtype == jnp.float32


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory):
    """The data the 0.1.0 fixture checkpoints were trained and evaluated on."""
    folder = make_idx_dataset(tmp_path_factory.mktemp("idx010"), n_train=60, n_test=20, side=4)
    return data.load_dataset("mnist", folder, dev_size=12, seed=0)


@pytest.mark.parametrize(
    "name, dropout, ema, accuracy, loss",
    [
        ("v0.1.0_bn_dropout_ema", 0.2, 0.9, 0.05, 2.637713623046875),
        ("v0.1.0_plain", None, None, 0.1, 2.6576745986938475),
    ],
)
def test_checkpoints_written_by_0_1_0_still_load(fixture_data, name, dropout, ema, accuracy, loss):
    """Files written by jaxmlp 0.1.0 (format 1, switches in the config): their switches become Hyper's
    None / numbers, and the model evaluates to what 0.1.0 measured on the same data (float32 sums in
    the same order: 1e-6 relative)."""
    tc, hyper, params, bn_state, norm, meta = run.load_model(FIXTURES / f"{name}.npz")
    assert meta["format_version"] == 1
    assert hyper.dropout_rate == pytest.approx(dropout) if dropout else hyper.dropout_rate is None
    assert hyper.ema_decay == pytest.approx(ema) if ema else hyper.ema_decay is None
    acc, got = step.evaluate(params, bn_state, fixture_data.x_test, fixture_data.y_test, config=tc.model)
    assert acc == pytest.approx(accuracy) and got == pytest.approx(loss, rel=1e-6)


def test_a_0_1_0_run_resumes(fixture_data, tmp_path):
    shutil.copy(FIXTURES / "v0.1.0_bn_dropout_ema.npz", tmp_path / "checkpoint.npz")
    tc = step.TrainConfig(  # 0.1.0 knew one EMA, the constant decay: the run goes on with it
        model=MLPConfig(sizes=(16, 8, 10), batchnorm=True),
        batch_size=16,
        epochs=3,
        schedule="cosine",
        ema_schedule="constant",
    )
    res = run.fit(
        fixture_data,
        tc,
        Hyper(learning_rate=3e-3, dropout_rate=0.2, ema_decay=0.9),
        out_dir=tmp_path,
        resume=True,
        progress=False,
        log=lambda s: None,
    )
    assert [r["epoch"] for r in res.history] == [1, 2, 3] and res.state.ema is not None
    meta, _ = checkpoint.load(tmp_path / "checkpoint.npz")
    assert meta["format_version"] == checkpoint.FORMAT_VERSION and meta["jaxmlp_version"] == jaxmlp.__version__


def test_unreadable_metadata_names_the_version_that_wrote_it(tmp_path):
    meta, arrays = checkpoint.load(FIXTURES / "v0.1.0_plain.npz")
    np.savez(tmp_path / "bad.npz", __meta__=np.array(json.dumps({**meta, "config": {"epochs": 2}})), **arrays)
    with pytest.raises(checkpoint.CheckpointError, match=r"bad.npz: .*written by jaxmlp 0\.1\.0"):
        run.load_model(tmp_path / "bad.npz")


def test_outputs_grow_with_the_run_and_an_interrupt_keeps_them(tiny, tmp_path):
    """After every epoch metrics.csv and a partial summary.json are on disk; a KeyboardInterrupt in
    epoch 3 leaves the record of epochs 1-2 (and the curves), raises RunInterrupted, and resuming
    ends bit-identical to a run that was never interrupted."""
    tc = small_tc(epochs=4, model=MLPConfig(sizes=(16, 32, 10), batchnorm=True))
    hyper = Hyper(learning_rate=3e-3, dropout_rate=0.2, ema_decay=0.9)
    seen = []

    def log(line):
        if line.startswith("epoch   2"):  # epoch 1's files are written; epoch 2's not yet
            seen.append(
                (
                    len(list(csv.DictReader(open(tmp_path / "metrics.csv")))),
                    json.loads((tmp_path / "summary.json").read_text())["status"],
                )
            )
        if line.startswith("epoch   3"):
            raise KeyboardInterrupt

    with pytest.raises(run.RunInterrupted) as e:
        run.fit(tiny, tc, hyper, out_dir=tmp_path, progress=False, log=log)
    assert seen == [(1, "running")]
    assert (e.value.epochs_done, e.value.epochs, e.value.signal_name) == (2, 4, "SIGINT")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs"] == 2 and summary["test_accuracy"] is None
    assert len(list(csv.DictReader(open(tmp_path / "metrics.csv")))) == 2 and (tmp_path / "curves.png").is_file()
    assert checkpoint.load(tmp_path / "checkpoint.npz")[0]["epoch"] == 2
    resumed = run.fit(tiny, tc, hyper, out_dir=tmp_path, resume=True, progress=False, log=lambda s: None)
    clean = run.fit(tiny, tc, hyper, progress=False, log=lambda s: None)
    assert leaves_equal(resumed.state, clean.state)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "finished"


def test_a_run_that_cannot_fit_in_memory_is_refused_before_allocating(tiny, tmp_path, monkeypatch):
    from jaxmlp import memory

    huge = small_tc(model=MLPConfig(sizes=(16, 100_000, 100_000, 10)))  # 120 GB of parameters and Adam state
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 8 * 2**30)
    with pytest.raises(
        ValueError,
        match=r"this run's parameters, optimizer state and training data needs 111\.8 "
        r"GiB but cpu memory has 8\.0 GiB free; use narrower",
    ):
        run.fit(tiny, huge, Hyper(), out_dir=tmp_path / "x", progress=False, log=lambda s: None)
    assert not (tmp_path / "x").exists()
    # the compiled program is checked too, and a folder made for a run that fails early goes again
    monkeypatch.setattr(memory, "program_bytes", lambda compiled: int(7.5 * 2**30))
    with pytest.raises(ValueError, match=r"the compiled training epoch needs 7\.5 GiB but cpu memory has 8\.0 GiB"):
        run.fit(tiny, small_tc(), Hyper(), out_dir=tmp_path / "y" / "z", progress=False, log=lambda s: None)
    assert not (tmp_path / "y").exists()


def test_a_run_stopped_in_its_first_epoch_leaves_nothing_and_an_old_run_intact(tiny, tmp_path):
    """Interrupted before its first checkpoint, a run writes nothing (not resumable, so no files that
    only --overwrite could clear), removes the folder it made, and — run with overwrite over an
    earlier run — leaves that earlier run as it was. The user's own files, *.tmp included, stay."""

    def stop_in_epoch_one(line):
        if line.startswith("epoch   1"):  # logged before the epoch's checkpoint is written
            raise KeyboardInterrupt

    fresh = tmp_path / "new" / "run"
    with pytest.raises(run.RunInterrupted) as e:
        run.fit(tiny, small_tc(epochs=3), Hyper(), out_dir=fresh, progress=False, log=stop_in_epoch_one)
    assert not e.value.resumable and e.value.epochs_done == 0 and not (tmp_path / "new").exists()
    old = tmp_path / "old"
    run.fit(tiny, small_tc(epochs=1), Hyper(), out_dir=old, progress=False, log=lambda s: None)
    (old / "notes.tmp").write_text("mine")
    before = {f.name: f.read_bytes() for f in old.iterdir()}
    with pytest.raises(run.RunInterrupted):
        run.fit(tiny, small_tc(epochs=3), Hyper(), out_dir=old, overwrite=True, progress=False, log=stop_in_epoch_one)
    assert {f.name: f.read_bytes() for f in old.iterdir()} == before


def test_resume_refuses_other_data_fewer_epochs_and_does_not_restart_an_early_stop(tiny, tmp_path):
    def fit(ds=tiny, epochs=40, resume=True, log=lambda s: None):
        return run.fit(
            ds,
            small_tc(epochs=epochs, patience=1),
            Hyper(learning_rate=3e-3),
            out_dir=tmp_path,
            resume=resume,
            progress=False,
            log=log,
        )

    fit(resume=False)
    meta, _ = checkpoint.load(tmp_path / "checkpoint.npz")
    assert meta["epoch"] < 40  # it stopped early
    with pytest.raises(checkpoint.CheckpointError, match=r"--dev-size 200 \(checkpoint\) vs 100 \(now\)"):
        fit(tiny._replace(x_dev=tiny.x_dev[:100], y_dev=tiny.y_dev[:100]))
    with pytest.raises(checkpoint.CheckpointError, match=r"--dataset mnist \(checkpoint\) vs fashion-mnist \(now\)"):
        fit(tiny._replace(name="fashion-mnist"))
    with pytest.raises(ValueError, match=rf"already holds {meta['epoch']} epochs; resuming with 1 would not"):
        fit(epochs=1)
    lines = []
    again = fit(log=lines.append)
    assert "the run stopped early" in lines[0] and len(again.history) == meta["epoch"]
    assert checkpoint.load(tmp_path / "checkpoint.npz")[0]["epoch"] == meta["epoch"]  # not trained further


def test_stop_ends_the_run_after_the_epoch_it_answers_in(tiny, tmp_path):
    """``stop`` (the CLI passes the signals it received) ends the run as that signal would, keeping the
    finished epochs: how a SIGINT whose KeyboardInterrupt Python swallowed still stops a run."""
    asked = []

    def stop():
        asked.append(1)
        return "SIGTERM" if len(asked) == 2 else None

    with pytest.raises(run.RunInterrupted) as e:
        run.fit(tiny, small_tc(epochs=5), Hyper(), out_dir=tmp_path, progress=False, log=lambda s: None, stop=stop)
    assert (e.value.epochs_done, e.value.signal_name) == (2, "SIGTERM")
    assert len(list(csv.DictReader(open(tmp_path / "metrics.csv")))) == 2


def test_an_interrupt_inside_an_epoch_stops_within_one_segment(tiny, tmp_path, monkeypatch):
    """Segments of one step (SEGMENT_FLOPS tiny): a stop asked for at the 3rd segment of epoch 2 ends
    the run there, not at the end of the 16-step epoch; the checkpoint holds epoch 1, and a resume
    replays epoch 2 exactly (its state equals an uninterrupted run's)."""
    from jaxmlp import step

    monkeypatch.setattr(step, "SEGMENT_FLOPS", 1)
    asked = []

    def stop():
        asked.append(1)
        return "SIGINT" if len(asked) == 16 + 3 else None  # 15 between epoch 1's steps, 1 after it

    tc, hyper, quiet = small_tc(epochs=2), Hyper(dropout_rate=0.2), dict(progress=False, log=lambda s: None)
    with pytest.raises(run.RunInterrupted) as e:
        run.fit(tiny, tc, hyper, out_dir=tmp_path / "cut", stop=stop, **quiet)
    assert e.value.epochs_done == 1 and len(asked) == 19
    resumed = run.fit(tiny, tc, hyper, out_dir=tmp_path / "cut", resume=True, **quiet)
    alone = run.fit(tiny, tc, hyper, out_dir=tmp_path / "alone", **quiet)
    assert leaves_equal(resumed.state, alone.state)


def test_a_run_without_dev_keeps_the_last_epoch_and_says_so(tiny, tmp_path):
    """No dev split: nothing to select by, so the kept model is the last epoch's (its test accuracy
    evaluated here from the final state, another path than fit's own `best`), the summary says so and
    has no dev accuracy (null, not NaN); early stopping, which would watch dev, is refused."""
    no_dev = tiny._replace(x_dev=tiny.x_dev[:0], y_dev=tiny.y_dev[:0])
    tc = small_tc(epochs=3)
    lines = []
    res = run.fit(
        no_dev, tc, Hyper(learning_rate=3e-3, ema_decay=0.9), out_dir=tmp_path, progress=False, log=lines.append
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dev_accuracy"] is None and summary["best_epoch"] == 3 == summary["epochs"]
    assert summary["selected_by"] == "last epoch (no dev split)"
    last = step.evaluate(step.eval_params(res.state), res.state.bn_state, tiny.x_test, tiny.y_test, config=tc.model)
    assert summary["test_accuracy"] == last[0] and leaves_equal(res.best_params, step.eval_params(res.state))
    assert "no dev split" in lines[0] and lines[-1].endswith("(no dev split: epoch 3)")
    with pytest.raises(ValueError, match=r"early stopping \(patience\) needs a dev split"):
        run.fit(no_dev, small_tc(epochs=3, patience=1), Hyper(), progress=False, log=lambda s: None)
    with_dev = run.fit(tiny, tc, Hyper(learning_rate=3e-3), progress=False, log=lambda s: None)
    assert with_dev.summary["selected_by"] == "best dev accuracy"


def test_ema_schedule_is_part_of_the_run_and_old_configs_read_as_constant(tiny, tmp_path):
    """A config written before ``ema_schedule`` existed (jaxmlp ≤ 0.3.0) trained with the constant
    decay: it reads back as "constant", so a resumed old run continues as it was; a resume that asks
    for another schedule is a structural difference, refused (check_resume says so before fit would)."""
    d = small_tc().to_dict()
    assert d["ema_schedule"] == "warmup" and step.TrainConfig.from_dict(d) == small_tc()
    del d["ema_schedule"]
    assert step.TrainConfig.from_dict(d).ema_schedule == "constant"
    with pytest.raises(ValueError, match="unknown EMA schedule 'none'"):
        small_tc(ema_schedule="none")
    hyper = Hyper(learning_rate=3e-3, ema_decay=0.9)
    run.fit(tiny, small_tc(epochs=1), hyper, out_dir=tmp_path, progress=False, log=lambda s: None)
    other = small_tc(epochs=2, ema_schedule="debias")
    for attempt in (
        lambda: run.check_resume(tmp_path, tiny, other, hyper),
        lambda: run.fit(tiny, other, hyper, out_dir=tmp_path, resume=True, progress=False, log=lambda s: None),
    ):
        with pytest.raises(checkpoint.CheckpointError, match=r"--ema-schedule warmup \(checkpoint\) vs debias \(now\)"):
            attempt()
    run.check_resume(tmp_path, tiny, small_tc(epochs=2), hyper)  # the same structure: no complaint
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at"):
        run.check_resume(tmp_path / "elsewhere", tiny, other, hyper)


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="give one of them, not both"):
        run.OutputFolder.check_free(tmp_path, resume=True, overwrite=True)
