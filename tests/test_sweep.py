"""Sweeps: a vmapped member equals its configuration trained alone; masking, divergence, chunks, files."""

import csv
import json
from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import data, run, step, sweep
from jaxmlp.hyper import Hyper
from jaxmlp.mlp import MLPConfig, loss_and_grads

from helpers import make_idx_dataset

# float32 tolerance for "the same computation, batched differently": vmapped and padded matmuls may
# sum in another order; over ~48 Adam steps the drift stays far below 1e-4 relative.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = make_idx_dataset(tmp_path_factory.mktemp("idx"), n_train=1000, n_test=200)
    return data.load_dataset("mnist", folder, dev_size=200, seed=0)


def tc_for(hidden=(32,), **kw):
    model = MLPConfig(
        sizes=(16, *hidden, 10), activation=kw.pop("activation", "sigmoid"), batchnorm=kw.pop("batchnorm", True)
    )
    return step.TrainConfig(model=model, batch_size=50, epochs=kw.pop("epochs", 3), **kw)


def train_alone(ds, tc, member, *, shared_key=0):
    """The member's configuration trained on its own, with the sweep's shared data order."""
    narrow = replace(tc, model=replace(tc.model, sizes=(16, *member.hidden, 10)))
    h = member.hyper.as_arrays()
    ts = step.init_state(jax.random.PRNGKey(member.seed), narrow, h)
    # the library's epoch with the sweep's batch order (step._epoch: train_epoch with a given order)
    epoch = jax.jit(
        lambda ts, h, x, y, idx: step._epoch(ts, h, x, y, narrow, idx, partial(loss_and_grads, config=narrow.model))
    )
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    for e in range(tc.epochs):
        idx = data.batch_indices(jax.random.fold_in(jax.random.PRNGKey(shared_key), e), x.shape[0], 50)
        ts, _ = epoch(ts, h, x, y, idx)
    return narrow, ts


def sweep_states(ds, tc, members, **kw):
    """Run a sweep (one chunk) and return the result and every member's final padded TrainState."""
    res = sweep.run_sweep(ds, tc, members, log=lambda s: None, **kw)
    return res, res.final_state


def test_parse_axis():
    assert sweep.parse_axis("0,1e-4,1e-3") == (0.0, 1e-4, 1e-3)
    np.testing.assert_allclose(sweep.parse_axis("1e-4:1e-1:log:4"), [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-12)
    np.testing.assert_allclose(sweep.parse_axis("0:0.5:lin:3"), [0, 0.25, 0.5])
    for bad in ("0:1:log:3", "1:2:cubic:3", "a,b", "1:2:log"):
        with pytest.raises(ValueError, match="cannot read sweep values"):
            sweep.parse_axis(bad)


def test_grid_members_and_validation():
    ms = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2], "l2": [0.0, 1e-4, 1e-3]}, seeds=2, hidden=[(8,), (16,)])
    assert len(ms) == 2 * 3 * 2 * 2
    assert {m.seed for m in ms} == {0, 1} and {m.hidden for m in ms} == {(8,), (16,)}
    with pytest.raises(ValueError, match="cannot sweep 'epochs'"):
        sweep.grid(Hyper(), {"epochs": [1, 2]})
    with pytest.raises(ValueError, match="learning rate"):
        sweep.grid(Hyper(), {"learning_rate": [0.0]})
    r = sweep.random_sample(Hyper(), {"learning_rate": [1e-4, 1e-1]}, 20, log_axes=["learning_rate"])
    lrs = [float(m.hyper.learning_rate) for m in r]
    assert len(r) == 20 and min(lrs) >= 1e-4 and max(lrs) <= 1e-1 and len(set(lrs)) == 20


def test_a_sweep_without_a_dev_split_is_refused_before_training(tiny, tmp_path):
    no_dev = tiny._replace(x_dev=tiny.x_dev[:0], y_dev=tiny.y_dev[:0])
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2]})
    with pytest.raises(ValueError, match="ranks its members by dev accuracy: give the data a dev split"):
        sweep.run_sweep(no_dev, tc_for(), members, out_dir=tmp_path / "s", log=lambda s: None)
    assert not (tmp_path / "s").exists()


def test_member_equals_same_configuration_trained_alone(tiny):
    """Members with different learning rates, L2, seeds AND widths (masked): each ends where it would
    alone. Sigmoid + batch norm: the case where an unmasked padded unit would NOT stay silent."""
    tc = tc_for(hidden=(32,))
    members = sweep.grid(Hyper(), {"learning_rate": [3e-3, 1e-2], "l2": [0.0, 1e-3]}, seeds=2, hidden=[(32,), (8,)])
    res, ts_wide = sweep_states(tiny, tc, members, axes=["learning_rate", "l2"])
    for j in (0, 5, 10, 15):  # wide and narrow members, both seeds, all hyperparameter values
        m = members[j]
        narrow_tc, alone = train_alone(tiny, tc, m)
        mine = sweep.unpad(jax.tree_util.tree_map(lambda a, j=j: a[j], ts_wide), alone)
        for a, b in zip(jax.tree_util.tree_leaves(mine.params), jax.tree_util.tree_leaves(alone.params)):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
        # and the padding stayed exactly zero
        W0 = np.asarray(ts_wide.params[0]["W"][j])
        assert not W0[:, m.hidden[0] :].any() and not np.asarray(ts_wide.params[1]["W"][j])[m.hidden[0] :].any()
    assert res.summary["members"] == 16 and res.summary["diverged"] == 0


def test_per_member_shuffle_uses_each_members_own_key(tiny):
    tc = tc_for(hidden=(16,), batchnorm=False, activation="relu", epochs=2)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-2]}, seeds=2, hidden=[(16,)])
    _, ts_wide = sweep_states(tiny, tc, members, shared_order=False)
    alone = step.init_state(jax.random.PRNGKey(1), tc, members[1].hyper.as_arrays())
    for _ in range(2):
        alone, _ = jax.jit(step.train_epoch, static_argnames="tc")(
            alone, members[1].hyper.as_arrays(), jnp.asarray(tiny.x_train), jnp.asarray(tiny.y_train), tc=tc
        )
    for a, b in zip(jax.tree_util.tree_leaves(ts_wide.params), jax.tree_util.tree_leaves(alone.params)):
        np.testing.assert_allclose(a[1], b, rtol=RTOL, atol=ATOL)


def test_diverged_members_are_reported_and_do_not_poison_the_others(tiny):
    tc = tc_for(hidden=(16,), batchnorm=False, activation="relu", optimizer="sgd")
    good = sweep.grid(Hyper(), {"learning_rate": [0.05, 0.1]})
    bad = sweep.grid(Hyper(), {"learning_rate": [1e30]})
    mixed = sweep.run_sweep(tiny, tc, good[:1] + bad + good[1:], axes=["learning_rate"], log=lambda s: None)
    clean = sweep.run_sweep(tiny, tc, good, axes=["learning_rate"], log=lambda s: None)
    assert [r["diverged"] for r in mixed.rows] == [False, True, False]
    assert mixed.rows[1]["diverged_at_step"] >= 1 and np.isnan(mixed.rows[1]["dev_accuracy"])
    assert mixed.summary["diverged"] == 1
    for a, b in zip([mixed.rows[0], mixed.rows[2]], clean.rows):
        assert a["dev_accuracy"] == pytest.approx(b["dev_accuracy"], abs=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_chunks_give_the_same_results_as_one_program(tiny):
    tc = tc_for(hidden=(16,), batchnorm=False, activation="tanh")
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]})
    whole = sweep.run_sweep(tiny, tc, members, log=lambda s: None)
    chunked = sweep.run_sweep(tiny, tc, members, chunk_size=2, log=lambda s: None)
    assert chunked.summary["chunk_size"] == 2
    for a, b in zip(whole.rows, chunked.rows):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["dev_accuracy"] == pytest.approx(b["dev_accuracy"], abs=1e-6)


def test_outputs_and_best_checkpoint(tiny, tmp_path):
    tc = tc_for(hidden=(16,))
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2], "dropout_rate": [0.0, 0.2]}, seeds=1)
    res = sweep.run_sweep(
        tiny, tc, members, axes=["learning_rate", "dropout_rate"], out_dir=tmp_path, log=lambda s: None
    )
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 4 and [float(r["dev_accuracy"]) for r in rows] == pytest.approx(
        [r["dev_accuracy"] for r in res.rows]
    )
    assert {"learning_rate", "dropout_rate", "seed", "train_loss", "dev_accuracy", "test_accuracy", "diverged"} <= set(
        rows[0]
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["members"] == 4 and summary["examples_per_second"] > 0
    assert summary["best"]["hyper"]["dropout_rate"] is not None  # a dropout axis turns dropout layers on
    best = summary["best"]
    assert best["dev_accuracy"] == max(float(r["dev_accuracy"]) for r in rows)
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    tc_b, _, params, bn_state, _, _ = run.load_model(tmp_path / "best_checkpoint.npz")
    acc, _ = step.evaluate(params, bn_state, tiny.x_test, tiny.y_test, config=tc_b.model)
    assert acc == pytest.approx(best["test_accuracy"], abs=1e-6)
    # the vmapped program's plain weight-gradient layout stays inside the sweep: the member's
    # checkpoint carries the user's configuration
    assert tc_b.model.weight_grad_layout == tc.model.weight_grad_layout == "auto"
    assert summary["config"]["model"]["weight_grad_layout"] == "auto"


@pytest.mark.parametrize("donate", [True, False])
def test_make_epoch_donates_the_state_unless_asked_not_to(tiny, donate):
    tc = tc_for(hidden=(8,), epochs=1)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2]})
    wide_tc = sweep.padded_config(tc, members)
    ts, masks, hyper = sweep.stack_members(members, tc, wide_tc)
    x, y = jnp.asarray(tiny.x_train), jnp.asarray(tiny.y_train)
    idx = data.batch_indices(jax.random.PRNGKey(0), x.shape[0], tc.batch_size)
    fn = sweep.make_epoch(wide_tc, shared_order=True, donate=donate)
    fn(ts, hyper, x, y, idx, masks)
    assert ts.params[0]["W"].is_deleted() == donate


def test_padded_config_is_widest_and_uses_the_plain_weight_gradient_layout():
    tc = tc_for(hidden=(16,))
    members = sweep.grid(Hyper(), {}, hidden=[(4, 3), (8, 2)])
    wide = sweep.padded_config(tc, members)
    assert wide.model.sizes == (tc.model.sizes[0], 8, 3, tc.model.sizes[-1])
    assert wide.model.weight_grad_layout == "plain"


def test_one_axis_sweep_draws_curves(tiny, tmp_path):
    tc = tc_for(hidden=(16,), epochs=2)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2]})
    sweep.run_sweep(tiny, tc, members, axes=["learning_rate"], out_dir=tmp_path, log=lambda s: None)
    assert (tmp_path / "curves.png").is_file() and not (tmp_path / "heatmap.png").exists()


def test_sweep_cli(tmp_path, capsys):
    from jaxmlp.cli import main

    folder = make_idx_dataset(tmp_path / "idx", n_train=300, n_test=50)
    out = tmp_path / "sw"
    argv = [
        "sweep",
        "--dataset",
        "mnist",
        "--data-dir",
        str(folder),
        "--dev-size",
        "50",
        "--hidden",
        "16/32",
        "--learning-rate",
        "1e-3:1e-2:log:3",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--batch-size",
        "50",
        "--no-progress",
        "--out",
        str(out),
    ]
    code = main(argv)
    text = capsys.readouterr().out
    assert code == 0 and "12 members" in text and "best member" in text
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 12
    assert (out / "heatmap.png").is_file()  # learning_rate × hidden
    # the same members with successive halving: 12 → 6 → 3 (rungs after 1 and 2 epochs at η = 2)
    code = main(argv + ["--halving", "2", "--overwrite"])
    text = capsys.readouterr().out
    assert code == 0 and "18 member-epochs trained (a grid trains 24)" in text
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted(int(r["epochs_trained"]) for r in rows) == [1] * 6 + [2] * 6
    assert (out / "search.png").is_file()


def test_members_with_and_without_an_optional_op_share_one_program(tiny):
    """hyper.align gives a member without dropout / EMA the neutral values (rate 0, decay 0): it computes
    exactly what the member with those values does, and the member with real values differs."""
    tc = tc_for(hidden=(16,), epochs=1)
    base = Hyper(learning_rate=1e-2)
    members = [
        sweep.Member(base, 0, (16,)),
        sweep.Member(base._replace(dropout_rate=0.0, ema_decay=0.0), 0, (16,)),
        sweep.Member(base._replace(dropout_rate=0.3, ema_decay=0.9), 0, (16,)),
    ]
    res = sweep.run_sweep(tiny, tc, members, log=lambda s: None)
    assert res.rows[0]["train_loss"] == res.rows[1]["train_loss"]
    assert res.rows[0]["dev_accuracy"] == res.rows[1]["dev_accuracy"]
    assert res.rows[2]["train_loss"] != res.rows[0]["train_loss"]


def test_without_a_chunk_size_the_sweep_runs_as_many_members_as_fit(tiny, monkeypatch):
    from jaxmlp import memory

    tc = tc_for(hidden=(16,), batchnorm=False, activation="tanh", epochs=1)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]})
    wide = sweep.padded_config(tc, members)
    per_member, shared = sweep.member_bytes(tc, wide, members, True, tiny.x_train.shape[0])
    assert per_member > 0 and shared > tiny.x_train.nbytes  # XLA's count: the data is shared by all
    shared += sum(a.nbytes for a in (tiny.x_dev, tiny.y_dev, tiny.x_test, tiny.y_test))
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: int((2.5 * per_member + shared) / 0.9))
    lines = []
    res = sweep.run_sweep(tiny, tc, members, log=lines.append)
    assert res.summary["chunk_size"] == 2 and lines[0].startswith("memory: 2 of 5 members fit at a time")
    with pytest.raises(ValueError, match=r"a chunk of 5 members needs .* free; use a smaller --chunk-size"):
        sweep.run_sweep(tiny, tc, members, chunk_size=5, log=lambda s: None)


def test_a_sweep_whose_one_member_cannot_fit_is_refused_before_anything_compiles(tiny, monkeypatch):
    """The advice applies at one member (narrower layers; a smaller chunk cannot help), and the refusal
    comes from shapes alone: member_bytes, which compiles, is never reached."""
    from jaxmlp import memory

    tc = tc_for(hidden=(16,), epochs=1)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2]}, hidden=[(16,)])
    state = memory.state_bytes(sweep.padded_config(tc, members), members[0].hyper.as_arrays())
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: state)  # less than state + data

    def compiles(*a, **k):
        raise AssertionError("member_bytes compiled programs before the refusal")

    monkeypatch.setattr(sweep, "member_bytes", compiles)
    for chunk_size in (None, 1, 2):
        with pytest.raises(
            ValueError, match=r"^one member of this sweep \(16-16-10: its state and the data\) needs"
        ) as e:
            sweep.run_sweep(tiny, tc, members, chunk_size=chunk_size, log=lambda s: None)
        assert str(e.value).endswith("free; use narrower or fewer --hidden layers") and "chunk" not in str(e.value)


def test_accuracies_are_exact_fractions_and_a_folder_with_a_sweep_is_kept(tiny, tmp_path):
    tc = tc_for(hidden=(16,), epochs=1)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2]})
    sweep.run_sweep(tiny, tc, members, axes=["learning_rate"], out_dir=tmp_path, log=lambda s: None)
    n_dev = tiny.x_dev.shape[0]
    for row in csv.DictReader(open(tmp_path / "results.csv")):
        correct = float(row["dev_accuracy"]) * n_dev
        assert correct == round(correct) and len(row["dev_accuracy"]) <= 6  # 0.8053, not 0.8052999973297119
    assert (tmp_path / "curves.png").is_file()  # one epoch: the learning-curve panel draws a marker
    with pytest.raises(ValueError, match="already holds a run .*; pass --overwrite to replace it"):
        sweep.run_sweep(tiny, tc, members, axes=["learning_rate"], out_dir=tmp_path, log=lambda s: None)
    sweep.run_sweep(tiny, tc, members, axes=["learning_rate"], out_dir=tmp_path, overwrite=True, log=lambda s: None)


def test_the_width_masked_backward_equals_jax_grad(x64):
    """The sweep's masked network (padded units multiplied by 0 after the activation): its hand-written
    gradients equal jax.grad of the same masked cost, float64, 1e-10 — sigmoid and batch norm, where a
    padded unit outputs 0.5 before the mask, at parameters away from their initialization."""
    from jaxmlp import mlp

    from helpers import tree_rel_diff

    config = MLPConfig(sizes=(6, 8, 5, 3), activation="sigmoid", batchnorm=True)
    params, state = mlp.init(jax.random.PRNGKey(0), config, dtype=jnp.float64)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    params = treedef.unflatten(
        [a + 0.3 * jax.random.normal(jax.random.PRNGKey(i), a.shape, a.dtype) for i, a in enumerate(leaves)]
    )
    masks = (jnp.arange(8) < 5).astype(jnp.float64), (jnp.arange(5) < 3).astype(jnp.float64)
    batch = (jax.random.normal(jax.random.PRNGKey(9), (10, 6), jnp.float64), jnp.arange(10) % 3)
    hyper = Hyper(dropout_rate=0.2, l2=1e-3).as_arrays(jnp.float64)
    key = jax.random.PRNGKey(3)
    _, manual, _, _ = jax.jit(mlp._loss_and_grads, static_argnums=5)(params, state, batch, hyper, key, config, masks)
    auto = jax.grad(mlp._cost)(params, state, batch, hyper, key, config, masks)
    assert tree_rel_diff(manual, auto) <= 1e-10
    # the padded units' outgoing weights get no data gradient, only the L2 term (λ/m) W
    np.testing.assert_allclose(manual[1]["W"][5:], 1e-3 / 10 * params[1]["W"][5:], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Successive halving and PBT over the member axis (the rules themselves: test_search.py)


def test_halving_stops_members_at_the_rungs_and_saves_their_epochs(tiny, tmp_path):
    """9 members, 9 epochs, η = 3: rungs after 1, 3 and 9 epochs; 9 → 3 → 1 members, 9·1 + 3·2 + 1·6 = 21
    member-epochs instead of 81, three compiled sizes; each rung keeps the best by dev accuracy, and a
    survivor trains exactly as it does in the plain sweep (re-stacking moves it, it changes nothing)."""
    tc = tc_for(hidden=(16,), epochs=9)
    members = sweep.grid(Hyper(), {"learning_rate": list(np.geomspace(3e-4, 3e-1, 9))})
    res = sweep.run_sweep(tiny, tc, members, halving=3, axes=["learning_rate"], out_dir=tmp_path, log=lambda s: None)
    s = res.summary
    assert s["search"] == {"method": "halving", "eta": 3, "rungs": [1, 3, 9]}
    assert s["member_epochs"] == 21 and s["population"] == [9, 3, 1]
    assert s["compiled_member_counts"] == [1, 3, 9]
    rows = res.rows
    assert sorted(r["epochs_trained"] for r in rows) == [1] * 6 + [3] * 2 + [9]
    assert all(r["rung"] == [1, 3, 9].index(r["epochs_trained"]) for r in rows)
    at1 = np.array([r["dev_accuracy_epoch_1"] for r in rows])
    went_on = [r["member"] for r in rows if r["epochs_trained"] >= 3]
    assert min(at1[went_on]) >= max(np.delete(at1, went_on))  # the best three at the first rung
    at3 = {r["member"]: r["dev_accuracy_epoch_3"] for r in rows if r["epochs_trained"] >= 3}
    (winner,) = [r["member"] for r in rows if r["epochs_trained"] == 9]
    assert at3[winner] == max(at3.values())
    assert all(np.isnan(r["dev_accuracy_epoch_9"]) for r in rows if r["member"] != winner)
    assert s["best"]["member"] == winner
    plain = sweep.run_sweep(tiny, tc, members, axes=["learning_rate"], log=lambda s: None)
    for m in [winner, *went_on]:  # the same member in the sweep that never stopped anyone
        e = rows[m]["epochs_trained"]
        np.testing.assert_allclose(res.history[e - 1]["dev_accuracy"][m], plain.history[e - 1]["dev_accuracy"][m])
    np.testing.assert_allclose(rows[winner]["train_loss"], plain.rows[winner]["train_loss"], rtol=RTOL)
    header = next(csv.reader(open(tmp_path / "results.csv")))
    assert {"rung", "epochs_trained", "dev_accuracy_epoch_1", "dev_accuracy_epoch_3", "dev_accuracy_epoch_9"} <= set(
        header
    )
    assert (tmp_path / "search.png").is_file()


def test_halving_with_chunks_and_width_sweeps(tiny):
    """Chunks of 2 and members of two widths: the same rung decisions as the one-chunk sweep."""
    tc = tc_for(hidden=(16,), epochs=4)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2, 1e-1]}, hidden=[(8,), (16,)])
    whole = sweep.run_sweep(tiny, tc, members, halving=2, log=lambda s: None)
    chunked = sweep.run_sweep(tiny, tc, members, halving=2, chunk_size=2, log=lambda s: None)
    assert whole.summary["population"] == chunked.summary["population"] == [6, 3, 1]
    assert [r["epochs_trained"] for r in whole.rows] == [r["epochs_trained"] for r in chunked.rows]
    assert chunked.summary["compiled_member_counts"] == [1, 2]
    for a, b in zip(whole.rows, chunked.rows):
        np.testing.assert_allclose(a["dev_accuracy"], b["dev_accuracy"], atol=1 / 200 + 1e-12)  # one example


def test_a_diverged_member_ranks_last_in_halving_and_is_replaced_by_pbt(tiny):
    """A member whose loss turned non-finite predicts one class (~10% dev accuracy): it must still rank
    below every finite member, so halving never promotes it, and PBT's copy makes it healthy again."""
    tc = tc_for(hidden=(16,), batchnorm=False, activation="relu", optimizer="sgd", epochs=2)
    members = sweep.grid(Hyper(), {"learning_rate": [1e30, 1e-4, 3e-4]})  # 1e30 diverges in its first steps
    res = sweep.run_sweep(tiny, tc, members, halving=2, log=lambda s: None)  # rungs after 1 and 2 epochs
    assert res.rows[0]["diverged"] and np.isnan(res.rows[0]["dev_accuracy_epoch_1"])
    assert [r["epochs_trained"] for r in res.rows][0] == 1  # ⌊3/2⌋ = 1 goes on, and not the diverged one
    assert sorted(r["epochs_trained"] for r in res.rows[1:]) == [1, 2]
    pbt = sweep.run_sweep(tiny, tc, members, pbt=1, axes=["learning_rate"], log=lambda s: None)
    row = pbt.rows[0]  # the one member of the bottom quarter (3 members: 1 copied)
    assert row["lineage"] in ("1@1", "2@1") and not row["diverged"] and np.isfinite(row["dev_accuracy"])
    ratio = row["final_learning_rate"] / members[int(row["lineage"][0])].hyper.learning_rate
    assert ratio == pytest.approx(0.8, rel=1e-6) or ratio == pytest.approx(1.2, rel=1e-6)
    assert pbt.summary["diverged"] == 0


@pytest.fixture
def compiles():
    """Counts XLA backend compilations (jax.monitoring) while the test runs."""
    seen = []

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    yield seen
    jax.monitoring.unregister_event_duration_listener(listen)


def test_pbt_exploits_inside_the_population_without_recompiling(tiny, tmp_path, compiles):
    """PBT every epoch and PBT once compile the same programs: the copy-and-perturb is one gather,
    compiled once; lineage, the final hyperparameters and the saved schedule tell one story."""
    tc = tc_for(hidden=(16,), epochs=4)
    members = sweep.grid(Hyper(dropout_rate=0.1), {"learning_rate": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]})
    axes = ["learning_rate", "dropout_rate"]
    sweep.run_sweep(tiny, tc, members, pbt=3, axes=axes, log=lambda s: None)  # warm: each program once
    n = len(compiles)
    once = sweep.run_sweep(tiny, tc, members, pbt=3, axes=axes, log=lambda s: None)
    after_once = len(compiles) - n
    every = sweep.run_sweep(tiny, tc, members, pbt=1, axes=axes, out_dir=tmp_path, log=lambda s: None)
    assert len(compiles) - n - after_once == after_once  # three PBT steps compile what one does
    assert once.summary["member_epochs"] == every.summary["member_epochs"] == 8 * 4
    assert every.summary["search"] == {"method": "pbt", "interval": 1, "steps": [1, 2, 3]}
    schedule = json.load(open(tmp_path / "pbt_schedule.json"))
    assert len(schedule) == 8 and all([e["epoch"] for e in s] == [0, 1, 2, 3] for s in schedule)
    for m, row in enumerate(every.rows):
        steps = schedule[m][1:]
        copies = [f"{e['source']}@{e['epoch']}" for e in steps if e["source"] != m]
        assert row["lineage"] == " ".join(copies)
        for a in axes:
            assert row[f"final_{a}"] == pytest.approx(schedule[m][-1][a], rel=1e-6)
            for i in range(1, len(schedule[m])):  # entry i: after the PBT step; entry i - 1: before it
                after, source = schedule[m][i], schedule[m][i]["source"]
                if source == m:  # not copied: unchanged, bit for bit
                    assert after[a] == schedule[m][i - 1][a]
                else:  # copied: its source's value before the step × 0.8 or × 1.2 (clipping not reached here)
                    ratio = after[a] / schedule[source][i - 1][a]
                    assert ratio == pytest.approx(0.8, rel=1e-6) or ratio == pytest.approx(1.2, rel=1e-6)
    copy_events = sum(len(row["lineage"].split()) for row in every.rows)
    assert copy_events == 2 * 3  # ⌊8/4⌋ members copied at each of the 3 PBT steps
    best = every.summary["best"]
    assert best["hyper"]["learning_rate"] == pytest.approx(best["final_learning_rate"], rel=1e-6)
    assert (tmp_path / "search.png").is_file()


def test_pbt_never_makes_a_bit_identical_twin(tiny):
    """Two good members without dropout and two with 90% dropout, PBT on dropout_rate only: the worst
    copies a member at 0, where × 0.8 and × 1.2 change nothing; exploration resamples its value (to 0.9),
    so every copy differs from its source (before, the copy was its source's twin: the same state, the
    same values, the same key, so the same training)."""
    tc = tc_for(hidden=(16,), epochs=3)
    members = [
        sweep.Member(Hyper(learning_rate=1e-2, dropout_rate=d), s, (16,))
        for d, s in ((0, 0), (0, 1), (0.9, 0), (0.9, 1))
    ]
    res = sweep.run_sweep(tiny, tc, members, pbt=1, axes=["dropout_rate"], log=lambda s: None)
    schedule = res.pbt_schedule
    copies = [(m, i) for m in range(4) for i in range(1, 3) if schedule[m][i]["source"] != m]
    assert len(copies) == 2  # one member (a quarter of 4) at each of the 2 PBT steps
    for m, i in copies:
        source = schedule[m][i]["source"]
        assert schedule[source][i - 1]["dropout_rate"] == 0  # it copied a member without dropout ...
        assert schedule[m][i]["dropout_rate"] == pytest.approx(0.9)  # ... and does not stay its twin


def test_pbt_with_chunks_and_widths_copies_the_width_too(tiny):
    """The worst member (a learning rate of 1e-5, 4 units) copies a 16-unit member across chunks of 2:
    it becomes 16 units wide (its masks are copied with its state)."""
    tc = tc_for(hidden=(16,), epochs=2)
    members = [
        sweep.Member(Hyper(learning_rate=lr), 0, (w,)) for lr, w in ((3e-2, 16), (1e-2, 16), (1e-5, 4), (1e-1, 16))
    ]
    res = sweep.run_sweep(tiny, tc, members, pbt=1, chunk_size=2, axes=["learning_rate"], log=lambda s: None)
    assert res.summary["compiled_member_counts"] == [2] and res.summary["padded_sizes"] == [16, 16, 10]
    copied = [r for r in res.rows if r["lineage"]]
    assert [r["member"] for r in copied] == [2]
    assert copied[0]["hidden"] == "4" and copied[0]["final_hidden"] == "16"
    source = int(copied[0]["lineage"].split("@")[0])
    assert source in (0, 1, 3) and res.rows[2]["dev_accuracy"] > 0.5  # it now trains like its source


# ---------------------------------------------------------------------------------------------
# The layout: members per program, one member per program being the single-run program


def test_one_member_per_program_is_the_single_run_program(tiny):
    """chunk_size=1 trains each member with the unvmapped program at its own widths: a narrow member
    ends where train_alone (the library's epoch, same data order) ends, bit for bit, and its padding
    stays 0; PBT and halving work across such one-member chunks."""
    tc = tc_for(hidden=(32,))
    members = sweep.grid(Hyper(), {"learning_rate": [3e-3, 1e-2]}, hidden=[(32,), (8,)])
    res = sweep.run_sweep(tiny, tc, members, chunk_size=1, log=lambda s: None)
    assert res.summary["compiled_member_counts"] == [1]
    ts_wide = res.final_state  # the last chunk: members[3], 8 units
    m = members[3]
    _, alone = train_alone(tiny, tc, m)
    mine = sweep.unpad(jax.tree_util.tree_map(lambda a: a[0], ts_wide), alone)
    for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(alone)):
        np.testing.assert_array_equal(a, b)
    assert not np.asarray(ts_wide.params[0]["W"][0])[:, 8:].any()
    vmapped = sweep.run_sweep(tiny, tc, members, log=lambda s: None)
    for a, b in zip(res.rows, vmapped.rows):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=RTOL)
    pbt = sweep.run_sweep(tiny, tc, members, chunk_size=1, pbt=1, axes=["learning_rate"], log=lambda s: None)
    assert pbt.summary["member_epochs"] == 12 and any(r["lineage"] for r in pbt.rows)
    halving = sweep.run_sweep(tiny, tc, members, chunk_size=1, halving=2, log=lambda s: None)
    assert halving.summary["member_epochs"] == 4 * 2 + 2 * 1  # rungs after 2 (3/2 rounded) and 3 epochs


def test_layout_candidates():
    assert sweep.layout_candidates(64, 1, 64) == [1, 4, 16, 64]
    assert sweep.layout_candidates(10, 1, 64) == [1, 4, 10]
    assert sweep.layout_candidates(64, 1, 8) == [1, 4, 8]  # memory caps the chunk
    assert sweep.layout_candidates(6, 2, 64) == [2, 6]  # several devices: multiples of their count, no 1
    assert sweep.layout_candidates(1, 1, 1) == [1]


def test_the_sweep_times_its_layouts_and_takes_the_fastest(tiny, monkeypatch, tmp_path):
    """probe=True times every candidate and takes the fastest (numbers in the summary), and keeps them:
    the same sweep again (probe=None) takes them from the cache without a probe; a sweep of tiny work
    with no cache takes the cost model's pick without timing anything."""
    monkeypatch.setenv("JAXMLP_LAYOUT_CACHE", str(tmp_path / "layouts.json"))
    tc = tc_for(hidden=(16,), epochs=1)
    members = sweep.grid(Hyper(), {"learning_rate": list(np.geomspace(1e-3, 1e-1, 5))})
    lines = []
    res = sweep.run_sweep(tiny, tc, members, probe=True, log=lines.append)
    probe = {int(c): rate for c, rate in res.summary["layout_probe"].items()}
    assert sorted(probe) == [1, 4, 5] and all(rate > 0 for rate in probe.values())
    assert res.summary["chunk_size"] == max(probe, key=probe.get) and res.summary["layout"] == "probe"
    assert any(line.startswith("layout: ") and "probe" in line for line in lines)
    again = sweep.run_sweep(tiny, tc, members, log=lambda s: None)
    assert again.summary["layout"] == "cache" and again.summary["probe_seconds"] == 0
    assert again.summary["chunk_size"] == res.summary["chunk_size"]
    assert again.summary["layout_probe"] == pytest.approx(res.summary["layout_probe"])
    monkeypatch.setenv("JAXMLP_LAYOUT_CACHE", "off")
    res = sweep.run_sweep(tiny, tc, members, log=lambda s: None)  # a few thousand member-steps of a tiny net
    assert res.summary["layout"] == "cost model" and res.summary["layout_probe"] == {}
    assert res.summary["chunk_size"] == 5 and res.summary["probe_seconds"] == 0  # a small net: all at once


def test_a_probe_stops_where_it_would_cost_more_than_its_share(tiny, monkeypatch):
    """Candidates that each take 1 s to time against a sweep their rates say trains 12 s: the first
    (the model's pick) is timed, the next would take the probe to 2 s > 10% of 12 s, so it stops."""
    from jaxmlp import chunks

    timed = []

    def fake_probe(candidates, members, tc, wide_tc, x, y, sharding=None, repeats=3):
        (c,) = candidates
        timed.append(c)
        clock[0] += 1.0
        return {c: 1e-3 if c == 1 else 2e-3}

    clock = [0.0]
    monkeypatch.setattr(sweep, "probe_layouts", fake_probe)
    monkeypatch.setattr(sweep.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(chunks, "probe_pays", lambda *a: True)
    wide = tc_for(hidden=(16,))  # 16-16-10: a small net, the model's pick is every member at once
    pick, rates, seconds, how = sweep.choose_layout(
        [1, 4, 16], [], None, wide, np.zeros((800, 16)), None, work=6_000, log=lambda s: None
    )
    assert timed == [16] and (pick, how, seconds) == (16, "probe", 1.0)  # the prior for a small net: 16
    timed.clear()
    pick, rates, seconds, how = sweep.choose_layout(
        [1, 4, 16], [], None, wide, np.zeros((800, 16)), None, work=600_000, log=lambda s: None
    )
    assert timed == [16, 1, 4] and pick == 1 and seconds == 3.0  # a long sweep: all three are worth it


def _stop_after(chunks: int):
    """A ``log`` that interrupts the sweep once ``chunks`` chunks have finished (as Ctrl-C would there)."""
    said = []

    def log(line):
        said.append(line)
        if sum(line.startswith("member") for line in said) == chunks:
            raise KeyboardInterrupt

    return log


def test_an_interrupted_sweep_keeps_its_chunks_and_resumes_to_the_one_go_results(tiny, tmp_path):
    """5 members in chunks of 2: interrupted after chunk 1, resumed, interrupted again, resumed: every
    row, the summary's best and best_checkpoint.npz equal the sweep run in one go, bit for bit (the same
    chunks run the same programs). Between the stops, results.csv holds exactly the finished members."""
    from jaxmlp import checkpoint

    tc = tc_for(hidden=(16,), batchnorm=False, activation="tanh", epochs=2)
    members = sweep.grid(Hyper(), {"learning_rate": [3e-2, 1e-2, 1e-3, 3e-4, 1e-1]})
    go = dict(chunk_size=2, axes=["learning_rate"])
    one = sweep.run_sweep(tiny, tc, members, out_dir=tmp_path / "one", log=lambda s: None, **go)
    out = tmp_path / "cut"
    with pytest.raises(sweep.SweepInterrupted) as e:
        sweep.run_sweep(tiny, tc, members, out_dir=out, log=_stop_after(1), **go)
    assert (e.value.members_done, e.value.members, e.value.resumable) == (2, 5, True)
    kept = list(csv.DictReader(open(out / "results.csv")))
    assert [int(r["member"]) for r in kept] == [0, 1]
    assert [float(r["dev_accuracy"]) for r in kept] == [r["dev_accuracy"] for r in one.rows[:2]]
    assert sweep.sweep_progress(out)["done"] == [0, 1] and not (out / "summary.json").exists()
    with pytest.raises(sweep.SweepInterrupted) as e:  # resumed, and stopped again after one more chunk
        sweep.run_sweep(tiny, tc, members, out_dir=out, resume=True, log=_stop_after(1), **go)
    assert e.value.members_done == 4 and len(list(csv.DictReader(open(out / "results.csv")))) == 4
    lines = []
    res = sweep.run_sweep(tiny, tc, members, out_dir=out, resume=True, log=lines.append, **go)
    assert "resuming: 4 of 5 members had finished" in lines[0]
    assert res.rows == one.rows  # every field, exactly
    assert res.summary["best"] == one.summary["best"] and res.summary["resumed_chunks"] == 2
    assert list(csv.DictReader(open(out / "results.csv"))) == list(csv.DictReader(open(tmp_path / "one/results.csv")))
    (meta_a, a), (meta_b, b) = (checkpoint.load(d / "best_checkpoint.npz") for d in (tmp_path / "one", out))
    assert meta_a == meta_b and a.keys() == b.keys()
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert not (out / sweep.PROGRESS_FILE).exists()  # whole: nothing left to resume
    with pytest.raises(ValueError, match="holds no unfinished sweep"):
        sweep.run_sweep(tiny, tc, members, out_dir=out, resume=True, log=lambda s: None, **go)


def test_a_resume_with_other_settings_or_a_search_is_refused(tiny, tmp_path):
    tc = tc_for(hidden=(16,), epochs=1)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2, 3e-2]})
    go = dict(chunk_size=1, axes=["learning_rate"], out_dir=tmp_path)
    with pytest.raises(sweep.SweepInterrupted):
        sweep.run_sweep(tiny, tc, members, log=_stop_after(1), **go)
    other = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2, 1e-1]})
    with pytest.raises(ValueError, match=r"started with other settings \(the members \(3, now 3, or their values\)\)"):
        sweep.run_sweep(tiny, tc, other, resume=True, log=lambda s: None, **go)
    with pytest.raises(ValueError, match=r"started with other settings \(epochs 1, now 2\)"):
        sweep.run_sweep(tiny, replace(tc, epochs=2), members, resume=True, log=lambda s: None, **go)
    with pytest.raises(ValueError, match="a search .* keeps nothing until it ends"):
        sweep.run_sweep(tiny, replace(tc, epochs=2), members, resume=True, halving=2, log=lambda s: None, **go)
    with pytest.raises(ValueError, match="runs in chunks of 1: resume it with that chunk size"):
        sweep.run_sweep(tiny, tc, members, resume=True, log=lambda s: None, **{**go, "chunk_size": 2})
    kept = json.loads((tmp_path / sweep.PROGRESS_FILE).read_text())
    (tmp_path / sweep.PROGRESS_FILE).write_text(json.dumps({**kept, "version": 99}))
    with pytest.raises(ValueError, match="is of version 99, this jaxmlp reads 1"):
        sweep.run_sweep(tiny, tc, members, resume=True, log=lambda s: None, **go)
    (tmp_path / sweep.PROGRESS_FILE).write_text(json.dumps(kept))
    assert sweep.sweep_progress(tmp_path)["done"] == [0]  # the refusals changed nothing


def test_a_sweep_interrupted_before_its_first_chunk_leaves_no_folder(tiny, tmp_path, monkeypatch):
    """The interrupt lands inside the first chunk's first epoch (where the sweep reads its losses)."""
    tc = tc_for(hidden=(16,), epochs=1)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2]})

    def interrupted(losses):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "first_nonfinite", interrupted)
    with pytest.raises(sweep.SweepInterrupted) as e:
        sweep.run_sweep(tiny, tc, members, chunk_size=1, out_dir=tmp_path / "s", axes=["learning_rate"], log=print)
    assert (e.value.members_done, e.value.resumable) == (0, False) and not (tmp_path / "s").exists()


def test_an_interrupt_while_the_last_files_are_written_is_resumable(tiny, tmp_path, monkeypatch):
    """Ctrl-C after the last chunk, inside write_outputs: every member's row is kept, the interrupt says
    so, the folder points at --resume, and the resume writes the files without training anything."""
    tc = tc_for(hidden=(16,), epochs=1)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 1e-2]})
    go = dict(chunk_size=1, axes=["learning_rate"], out_dir=tmp_path)
    real = sweep.write_outputs

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "write_outputs", interrupted)
    with pytest.raises(sweep.SweepInterrupted) as e:
        sweep.run_sweep(tiny, tc, members, log=lambda s: None, **go)
    assert (e.value.members_done, e.value.resumable, e.value.search) == (2, True, False)
    with pytest.raises(ValueError, match="already holds a run .*; pass --resume to continue it"):
        sweep.run_sweep(tiny, tc, members, log=lambda s: None, **go)
    monkeypatch.setattr(sweep, "write_outputs", real)
    lines = []
    res = sweep.run_sweep(tiny, tc, members, resume=True, log=lines.append, **go)
    assert "resuming: 2 of 2 members had finished; writing the sweep's files" in lines[0]
    assert res.summary["member_epochs"] == 2 and (tmp_path / "summary.json").is_file()
    assert not (tmp_path / sweep.PROGRESS_FILE).exists()
