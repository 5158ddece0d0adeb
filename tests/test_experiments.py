"""The experiment scripts run end to end in --quick mode, so they cannot rot."""

import os
import subprocess
import sys
import tempfile

import pytest

import jaxmlp as jm

from helpers import FASHION_DIR, REPO


def run_quick(out, *names):
    """`python -m experiments [NAMES] --quick --out OUT` (every experiment when no name), which must succeed."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    r = subprocess.run(
        [sys.executable, "-m", "experiments", *names, "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs Fashion-MNIST (make test installs it)")
def test_one_experiment_runs_quick_and_writes_its_section_and_figure(tmp_path):
    """The default run's case of this kind (≈ 15 s): the notebook reproduction, end to end in --quick
    mode; every experiment runs in the slow test below (≈ 3 min on 2 cores)."""
    run_quick(tmp_path, "seed_reproduction")
    section = (tmp_path / "sections" / "seed_reproduction.md").read_text()
    assert section.startswith("## seed_reproduction") and "| " in section
    assert (tmp_path / "seed_reproduction.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs Fashion-MNIST (make test installs it)")
def test_every_experiment_runs_quick(tmp_path):
    results = REPO / "experiments" / "RESULTS.md"
    before = results.stat().st_mtime_ns if results.exists() else None
    run_quick(tmp_path)
    from experiments.__main__ import NAMES

    for name in NAMES:  # every experiment wrote its section
        section = (tmp_path / "sections" / f"{name}.md").read_text()
        assert section.startswith(f"## {name}")
        assert "| " in section or "![" in section  # a table or a figure
    for fig in (
        "seed_reproduction.png",
        "activations.png",
        "optimizers.png",
        "regularization.png",
        "sweep_lr_l2.png",
        "ema_default.png",
    ):
        assert (tmp_path / fig).read_bytes()[:4] == b"\x89PNG"
    after = results.stat().st_mtime_ns if results.exists() else None
    assert after == before  # quick runs never touch the committed results


def test_unknown_experiment_is_an_error():
    r = subprocess.run(
        [sys.executable, "-m", "experiments", "nope", "--quick"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "unknown experiment nope" in r.stderr


def test_mnist_digits_fall_back_in_quick_runs_and_say_what_they_need_otherwise(monkeypatch, tmp_path):
    """No ../shared MNIST and no download: --quick runs use Fashion-MNIST in its place, full runs stop
    with one DatasetError line naming what to provide."""
    from experiments import _common

    def offline(*args, **kwargs):
        raise jm.DatasetError("mnist: no data in the cache and download failed (offline)")

    monkeypatch.setattr(_common, "MNIST_T10K", tmp_path / "no-mnist-here")
    monkeypatch.setattr(jm.data, "find_files", offline)
    stand_in = jm.Dataset("fashion-mnist", *([None] * 6), None, 10)
    monkeypatch.setattr(_common, "fashion", lambda quick, seed=0: stand_in)
    assert _common.mnist_digits(quick=True).name == "fashion-mnist (in place of the MNIST digits)"
    with pytest.raises(jm.DatasetError, match=r"no-mnist-here holds no t10k files.*set JAXMLP_MNIST_T10K") as e:
        _common.mnist_digits(quick=False)
    assert "\n" not in str(e.value)


def test_a_failed_quick_run_says_one_line_and_leaves_no_temp_folder(monkeypatch, tmp_path, capsys):
    import experiments.__main__ as experiments_main
    import experiments.seed_reproduction

    def no_data(quick, out):
        raise jm.DatasetError("no data here")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(experiments.seed_reproduction, "run", no_data)
    assert experiments_main.main(["seed_reproduction", "--quick"]) == 2
    assert capsys.readouterr().err == "experiments: error: no data here\n"
    assert list(tmp_path.iterdir()) == []  # the jaxmlp-exp-* folder it made is gone
