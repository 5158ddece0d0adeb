"""jaxmlp.chunks: the cost model that decides whether a layout probe pays, and the cache of what one measured."""

import json

import pytest

from jaxmlp import chunks, search
from jaxmlp.mlp import MLPConfig
from jaxmlp.step import TrainConfig


def config(*sizes, batch_size=128):
    return TrainConfig(model=MLPConfig(sizes=sizes), batch_size=batch_size)


def test_step_flops_and_the_training_time_they_predict():
    tc = config(784, 256, 10)
    assert chunks.step_flops(tc) == 6 * 128 * (784 * 256 + 256 * 10)  # 6 flops per weight per example
    assert chunks.train_seconds(tc, 1000) == pytest.approx(1000 * chunks.step_flops(tc) / chunks.FLOPS["cpu"])


def test_a_probe_pays_only_where_its_compiles_fit_its_share_of_the_training():
    tc = config(784, 256, 10)
    per_candidate = chunks.COMPILE_SECONDS["cpu"]
    steps = 4 * per_candidate / chunks.PROBE_SHARE / chunks.train_seconds(tc, 1)  # 4 candidates: exactly the share
    assert chunks.probe_pays(tc, int(steps) + 1, 4) and not chunks.probe_pays(tc, int(steps) - 1, 4)
    # the #26 problem (27 members, halving 3 over 9 epochs, 390 steps): 63 member-epochs
    assert search.member_epochs(27, search.segment_ends(9, halving=3), 3) == 27 + 9 * 2 + 3 * 6
    assert search.member_epochs(5, (4,)) == 20


def test_the_prior_pick_on_a_cpu():
    assert chunks.prior_pick(config(784, 100, 10), [1, 4, 16]) == 16  # 6.1e7 flops a step: vmapped
    assert chunks.prior_pick(config(784, 512, 512, 10), [1, 4, 16]) == 1  # matmul-bound: the single-run program
    assert chunks.prior_pick(config(784, 512, 512, 10), [2, 8]) == 8  # several devices: no single-run candidate


def test_the_cache_keeps_rates_per_machine_and_shape_and_survives_a_bad_file(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "layouts.json"
    monkeypatch.setenv(chunks.CACHE_ENV, str(path))
    a = chunks.cache_key(config(784, 100, 10), [1, 4], 1, True, 50_000)
    b = chunks.cache_key(config(784, 200, 10), [1, 4], 1, True, 50_000)
    assert a != b and a == chunks.cache_key(
        TrainConfig(model=MLPConfig(sizes=(784, 100, 10)), epochs=99), [1, 4], 1, True, 50_000
    )
    assert chunks.cached(a) is None
    chunks.remember(a, {1: 0.5, 4: 0.25})
    assert chunks.cached(a) == {1: 0.5, 4: 0.25} and chunks.cached(b) is None
    path.write_text("{not json")
    assert chunks.cached(a) is None  # ignored, not an error
    chunks.remember(a, {4: 0.1})
    assert json.loads(path.read_text()) == {a: {"4": 0.1}}
    monkeypatch.setenv(chunks.CACHE_ENV, "off")
    assert chunks.cache_path() is None and chunks.cached(a) is None
    monkeypatch.delenv(chunks.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert chunks.cache_path() == tmp_path / "xdg" / "jaxmlp" / "layouts.json"
    monkeypatch.setenv(chunks.CACHE_ENV, str(tmp_path / "ro" / "x.json"))
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        chunks.remember(a, {1: 1.0})  # cannot write (unless root): nothing happens, no error
    finally:
        (tmp_path / "ro").chmod(0o700)
