"""The experiment scripts run end to end in --quick mode, so they cannot rot."""

import os
import subprocess
import sys

import pytest

from conftest import FASHION_DIR, REPO, SHARED_MNIST


@pytest.mark.skipif(
    not (FASHION_DIR.is_dir() and SHARED_MNIST.is_dir()),
    reason="needs Fashion-MNIST (make test installs it) and ../shared/data/mnist-t10k",
)
def test_every_experiment_runs_quick(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    results = REPO / "experiments" / "RESULTS.md"
    before = results.stat().st_mtime_ns if results.exists() else None
    r = subprocess.run(
        [sys.executable, "-m", "experiments", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("seed_reproduction", "activations", "optimizers", "regularization", "sweep_lr_l2", "best_mlp"):
        section = (tmp_path / "sections" / f"{name}.md").read_text()
        assert section.startswith(f"## {name}")
        assert "| " in section or "![" in section  # a table or a figure
    for fig in ("seed_reproduction.png", "activations.png", "optimizers.png", "regularization.png", "sweep_lr_l2.png"):
        assert (tmp_path / fig).read_bytes()[:4] == b"\x89PNG"
    after = results.stat().st_mtime_ns if results.exists() else None
    assert after == before  # quick runs never touch the committed results


def test_unknown_experiment_is_an_error():
    r = subprocess.run(
        [sys.executable, "-m", "experiments", "nope", "--quick"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "unknown experiment nope" in r.stderr
