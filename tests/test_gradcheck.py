"""jaxmlp.gradcheck: the network report's verdict (check_gradients itself is exercised in test_mlp.py;
any op's rule checker, jaxmlp.rulecheck, in test_rulecheck.py)."""

import numpy as np

from jaxmlp.gradcheck import GradReport, worst


def test_worst_keeps_nan_and_a_nan_network_report_fails():
    assert np.isnan(worst([0.0, float("nan")])) and max([0.0, float("nan")]) == 0.0
    assert not GradReport("float64", float("nan"), None).ok
    assert not GradReport("float64", 0.0, float("nan")).ok
    assert GradReport("float64", 1e-12, 1e-9).ok and not GradReport("float64", 1e-9, 1e-9).ok
