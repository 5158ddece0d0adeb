"""Many devices through jax.sharding: a sharded sweep and data-parallel training equal one device.

Runs in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4 (4 CPU devices), since
the device count is fixed when JAX starts. Tolerance: float32 rtol 1e-4 — the all-reduce sums the
gradient over devices in a different order than one device's matmul does.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys, pathlib
    sys.path.insert(0, "tests")
    import jax, jax.numpy as jnp, numpy as np
    from helpers import make_idx_dataset
    from jaxmlp import data, parallel, step, sweep
    from jaxmlp.hyper import Hyper
    from jaxmlp.mlp import MLPConfig

    out = {"devices": jax.device_count()}
    ds = data.load_dataset("mnist", make_idx_dataset(pathlib.Path(sys.argv[1]), n_train=1000, n_test=200),
                           dev_size=200)
    tc = step.TrainConfig(model=MLPConfig(sizes=(16, 32, 10), batchnorm=True), batch_size=40, epochs=2)
    members = sweep.grid(Hyper(), {"learning_rate": [1e-3, 3e-3, 1e-2]}, seeds=2, hidden=[(32,)])
    sharded = sweep.run_sweep(ds, tc, members, log=lambda s: None)
    single = sweep.run_sweep(ds, tc, members, n_devices=1, log=lambda s: None)
    out["sweep_devices"] = sharded.summary["devices"]
    out["sweep_chunk"] = sharded.summary["chunk_size"]
    out["sweep_state_devices"] = len(sharded.final_state.params[0]["W"].sharding.device_set)
    out["sweep_max_abs_dev_acc_diff"] = max(abs(a["dev_accuracy"] - b["dev_accuracy"])
                                            for a, b in zip(sharded.rows, single.rows))
    out["sweep_max_rel_param_diff"] = max(
        float(np.max(np.abs(np.asarray(a)[:6] - np.asarray(b)[:6])) / (np.max(np.abs(np.asarray(b)[:6])) + 1e-12))
        for a, b in zip(jax.tree_util.tree_leaves(sharded.final_state.params),
                        jax.tree_util.tree_leaves(single.final_state.params)))

    # searches over a member axis sharded on 4 devices: 6 members padded to 8 slots
    pbt = sweep.run_sweep(ds, tc, members, pbt=1, axes=["learning_rate"], log=lambda s: None)
    out["pbt"] = {k: pbt.summary[k] for k in ("member_epochs", "compiled_member_counts", "devices")}
    out["pbt_copies"] = sum(len(r["lineage"].split()) for r in pbt.rows)
    halving = sweep.run_sweep(ds, tc, members, halving=2, log=lambda s: None)
    out["halving"] = {k: halving.summary[k] for k in ("member_epochs", "compiled_member_counts", "population")}
    out["halving_trained"] = sorted(r["epochs_trained"] for r in halving.rows)

    # data-parallel training of one model
    hyper = Hyper(learning_rate=3e-3).as_arrays()
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    ts0 = step.init_state(jax.random.PRNGKey(0), tc, hyper)
    ref, _ = jax.jit(step.train_epoch, static_argnames="tc")(ts0, hyper, x, y, tc=tc)
    mesh = parallel.mesh("data")
    epoch = parallel.data_parallel_epoch(tc, mesh)
    out["hlo_has_all_reduce"] = "all-reduce" in epoch.lower(ts0, hyper, x, y).compile().as_text()
    dp, _ = epoch(step.init_state(jax.random.PRNGKey(0), tc, hyper), hyper, x, y)
    out["dp_max_rel_param_diff"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(b))) + 1e-12))
        for a, b in zip(jax.tree_util.tree_leaves(dp.params), jax.tree_util.tree_leaves(ref.params)))
    try:
        parallel.data_parallel_epoch(step.TrainConfig(model=tc.model, batch_size=30), mesh)
    except ValueError as e:
        out["bad_batch_error"] = str(e)
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path_factory.mktemp("idx"))],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    line = [s for s in r.stdout.splitlines() if s.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_four_devices_are_visible(result):
    assert result["devices"] == 4


def test_sharded_sweep_equals_single_device(result):
    assert result["sweep_devices"] == 4 and result["sweep_chunk"] == 8  # 6 members padded to 8
    assert result["sweep_state_devices"] == 4
    assert result["sweep_max_rel_param_diff"] < 1e-4
    assert result["sweep_max_abs_dev_acc_diff"] <= 1 / 200  # at most one of 200 dev predictions flips


def test_data_parallel_equals_single_device(result):
    assert result["hlo_has_all_reduce"]
    assert result["dp_max_rel_param_diff"] < 1e-4
    assert "must be a multiple of the 4 devices" in result["bad_batch_error"]


def test_halving_and_pbt_on_a_sharded_member_axis(result):
    """6 members in 8 slots over 4 devices: PBT copies ⌊6/4⌋ = 1 member at its one step (the 2 padding
    slots keep themselves); halving re-stacks 6 → 3 members into 4 slots (one program of 8, one of 4)."""
    assert result["pbt"] == {"member_epochs": 12, "compiled_member_counts": [8], "devices": 4}
    assert result["pbt_copies"] == 1
    assert result["halving"] == {"member_epochs": 6 + 3, "compiled_member_counts": [4, 8], "population": [6, 3]}
    assert result["halving_trained"] == [1, 1, 1, 2, 2, 2]


def test_one_thread_says_the_ending():
    """The watcher and the main thread may both find a lost peer: the first to claim the ending says it
    (and may claim it again), the other stays quiet."""
    import threading

    from jaxmlp import parallel

    watch, got = parallel._Watch(), []
    t = threading.Thread(target=lambda: got.extend([watch.claim(), watch.claim()]))
    t.start()
    t.join()
    assert got == [True, True] and watch.claim() is False
    said = []
    watch.lost(said.append, "x")  # the watcher's report, after another thread claimed the ending
    assert said == []
