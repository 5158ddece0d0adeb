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
