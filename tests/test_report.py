"""jaxmlp.report: the one atomic writer and the files and figures written through it."""

import csv
import json
import os
import stat

import pytest

from jaxmlp import report


def test_atomic_write_replaces_whole_files_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with report.atomic_write(path) as f:
        f.write("first")
    with pytest.raises(RuntimeError), report.atomic_write(path) as f:
        f.write("half of the second")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "first"
    assert os.listdir(path.parent) == ["out.txt"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() makes files, not mkstemp's 0600


def test_csv_json_and_figures(tmp_path):
    rows = [
        {"epoch": 1, "train_loss": 0.5, "dev_loss": 0.6, "train_accuracy": 0.8, "dev_accuracy": 0.7},
        {"epoch": 2, "train_loss": 0.4, "dev_loss": 0.5, "train_accuracy": 0.85, "dev_accuracy": 0.75},
    ]
    report.write_csv(tmp_path / "m.csv", rows)
    assert [float(r["train_loss"]) for r in csv.DictReader(open(tmp_path / "m.csv"))] == [0.5, 0.4]
    report.write_json(tmp_path / "s.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": [1, 2]}
    report.plot_curves(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "m.csv", "s.json"]


def test_progress_is_the_iterable_itself_when_off_or_not_on_a_terminal(monkeypatch):
    import io

    it = range(3)
    assert report.progress(it, enabled=False) is it

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file or a pipe: no bar redrawn into it
    assert report.progress(it, enabled=True) is it
    monkeypatch.setattr("sys.stderr", Terminal())
    bar = report.progress(it, enabled=True)
    assert bar is not it and list(bar) == [0, 1, 2]
    lines = []
    report.say(it, "hello", lines.append)
    assert lines == ["hello"]


@pytest.fixture
def figures(monkeypatch):
    """The figures report would save, kept open for the test to read (what is drawn, not just a file)."""
    kept = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path, dpi=100: kept.append((fig, path)))
    yield kept
    for fig, _ in kept:
        report.pyplot().close(fig)


def _member(m, lr, l2, acc, diverged=False, seed=0):
    nan = float("nan")
    return {
        "member": m,
        "learning_rate": lr,
        "l2": l2,
        "seed": seed,
        "hidden": "16",
        "dev_accuracy": nan if diverged else acc,
        "diverged": diverged,
    }


def test_a_grid_heatmap_says_diverged_where_every_member_diverged(figures, tmp_path):
    rows = [
        _member(0, 1e-3, 0.0, 0.8),
        _member(1, 1e-3, 1e-4, 0.7),
        _member(2, 1e-1, 0.0, 0, diverged=True),
        _member(3, 1e-1, 1e-4, 0.6),
    ]
    rows += [_member(4, 1e-3, 0.0, 0, diverged=True, seed=1)]  # one of the two seeds of the first cell
    report.plot_sweep(rows, [], ["learning_rate", "l2"], tmp_path)
    ((fig, path),) = figures
    ax = fig.axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert path.name == "heatmap.png" and texts == ["0.600", "0.700", "0.800\n(1/2 diverged)", "diverged"]
    assert "blank" not in ax.get_title() and "diverged" in ax.get_title()


def test_random_draws_are_points_with_the_diverged_and_the_best_marked(figures, tmp_path):
    """Five draws over two continuous axes: 25 pairs of values, 20 never drawn — not 'diverged' cells."""
    rows = [
        _member(m, lr, l2, acc)
        for m, (lr, l2, acc) in enumerate([(1e-4, 1e-5, 0.5), (3e-3, 1e-3, 0.9), (2e-2, 3e-4, 0.7), (7e-4, 5e-5, 0.6)])
    ]
    rows.append(_member(4, 0.5, 2e-5, 0, diverged=True))
    report.plot_sweep(rows, [], ["learning_rate", "l2"], tmp_path)
    ((fig, path),) = figures
    ax = fig.axes[0]
    assert path.name == "heatmap.png" and not ax.images and not ax.texts  # no grid of cells
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["member (colour: dev accuracy)", "best: dev 0.9000", "diverged"]
    points, best, diverged = ax.collections
    assert len(points.get_offsets()) == 4 and best.get_offsets().tolist() == [[1e-3, 3e-3]]
    assert diverged.get_offsets().tolist() == [[2e-5, 0.5]] and ax.get_xscale() == ax.get_yscale() == "log"


def test_search_png_marks_the_decisions_and_the_winner(figures, tmp_path):
    nan = float("nan")
    history = [{"dev_accuracy": [0.5, 0.6, 0.4]}, {"dev_accuracy": [0.7, 0.65, nan]}, {"dev_accuracy": [0.8, nan, nan]}]
    report.plot_search(history, [1, 2], "successive halving", tmp_path / "search.png", best=0)
    ((fig, _),) = figures
    ax = fig.axes[0]
    decisions = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"]
    assert decisions == [1, 2]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["members", "decision (members compared)", "best: member 0, dev 0.8000"]
