"""jaxmlp.gradcheck: the network report's verdict (check_gradients itself is exercised in test_mlp.py;
any op's rule checker, jaxmlp.rulecheck, in test_rulecheck.py)."""

import numpy as np

from jaxmlp.gradcheck import GradReport, worst


def test_worst_keeps_nan_and_a_nan_network_report_fails():
    assert np.isnan(worst([0.0, float("nan")])) and max([0.0, float("nan")]) == 0.0
    assert not GradReport("float64", float("nan"), None).ok
    assert not GradReport("float64", 0.0, float("nan")).ok
    assert GradReport("float64", 1e-12, 1e-9).ok and not GradReport("float64", 1e-9, 1e-9).ok


def test_a_gradient_check_that_cannot_fit_is_refused_after_compiling_before_running(monkeypatch, x64):
    """The two programs (hand-derived vs jax.grad, and the finite differences) are compiled from the real
    arguments and their memory, by XLA's own count, checked before either runs: at least the two
    gradients the first returns (2 × 8 bytes per parameter) on top of what is allocated."""
    import jax
    import pytest

    from jaxmlp import gradcheck, memory
    from jaxmlp.hyper import Hyper
    from jaxmlp.mlp import MLPConfig

    config = MLPConfig(sizes=(64, 48, 10))
    n_params = 64 * 48 + 48 + 48 * 10 + 10
    asked = []
    real_check = memory.check

    def record(need, have, what, advice):
        asked.append(need)
        real_check(need, have, what, advice)

    monkeypatch.setattr(memory, "check", record)
    report = gradcheck.check_gradients(config, Hyper(), key=jax.random.PRNGKey(0))
    assert report.ok and asked[-1] >= 2 * 8 * n_params
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: asked[-1] // 2)
    with pytest.raises(ValueError, match=r"^checking the gradients of 64-48-10 in float64 \(compiled\) needs"):
        gradcheck.check_gradients(config, Hyper(), key=jax.random.PRNGKey(0))
