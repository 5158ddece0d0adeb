"""Several real processes on 127.0.0.1 through jax.distributed (gloo collectives on CPU): a data-parallel
run and a sweep equal their one-process twins, and a process that dies stops the others with one line.

Each test starts its processes with ``python -m jaxmlp.cli`` (the installed command's code) on a free
port; every process loads the data itself."""

import csv
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxmlp import checkpoint

from helpers import make_idx_dataset

TIMEOUT = 240  # seconds for a whole multi-process command (start-up, compile, a few tiny epochs)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("idx"), n_train=1000, n_test=200)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(*args):
    return [sys.executable, "-m", "jaxmlp.cli", *map(str, args)]


def env(devices: int = 1):
    e = {**os.environ, "JAX_PLATFORMS": "cpu"}
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return e


def start_processes(args, n=2, log_dir=None):
    """``n`` processes of ``jaxmlp ARGS`` joined through a coordinator on a free local port."""
    port = free_port()
    procs = []
    for i in range(n):
        out = open(log_dir / f"p{i}.log", "w") if log_dir else subprocess.PIPE
        procs.append(
            subprocess.Popen(
                command(*args, "--coordinator", f"127.0.0.1:{port}", "--num-processes", n, "--process-id", i),
                stdout=out,
                stderr=subprocess.STDOUT if log_dir else subprocess.PIPE,
                text=True,
                env=env(),
            )
        )
    return procs


def finish(procs):
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, f"{out}\n{err}"
    return outs


def on_tiny_data(command, idx_dir):
    """``command``'s options for the tiny IDX dataset, its dev split 200 examples."""
    return [command, "--dataset", "mnist", "--data-dir", idx_dir, "--dev-size", 200]


def train_args(idx_dir, out, *more):
    return [
        *on_tiny_data("train", idx_dir),
        "--hidden",
        32,
        "--batch-size",
        50,
        "--learning-rate",
        3e-3,
        "--dropout",
        0.2,
        "--no-progress",
        "--data-parallel",
        "--out",
        out,
        *more,
    ]


def test_a_two_process_data_parallel_run_equals_one_process_on_two_devices(idx_dir, tmp_path):
    """2 processes × 1 CPU device against 1 process × 2 forced host devices: the same global mesh of 2,
    so the same program; the parameters agree to float32 summation order (1e-5 relative after 3 epochs
    of Adam, batch norm off, dropout on). Only process 0 writes, and it records the devices and processes."""
    one = tmp_path / "one"
    r = subprocess.run(
        command(*train_args(idx_dir, one, "--epochs", 3)), capture_output=True, text=True, env=env(2), timeout=TIMEOUT
    )
    assert r.returncode == 0, r.stderr
    two = tmp_path / "two"
    (out0, _), (out1, _) = finish(start_processes(train_args(idx_dir, two, "--epochs", 3)))
    assert "test accuracy" in out0 and "test accuracy" not in out1  # process 0 speaks, the others are quiet
    (_, a), (_, b) = (checkpoint.load(d / "checkpoint.npz") for d in (one, two))
    assert a.keys() == b.keys() and len(a) > 10  # the training state (Adam's moments too) and the best model
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert (s1["devices"], s1["processes"]) == (2, 1) and (s2["devices"], s2["processes"]) == (2, 2)
    assert s2["dev_accuracy"] == s1["dev_accuracy"] and s2["test_accuracy"] == s1["test_accuracy"]
    assert sorted(p.name for p in two.iterdir()) == ["checkpoint.npz", "curves.png", "metrics.csv", "summary.json"]


def sweep_args(idx_dir, out, *more):
    return [
        *on_tiny_data("sweep", idx_dir),
        "--hidden",
        "16/32",
        "--learning-rate",
        "1e-3,3e-3,1e-2,1e-1",
        "--batch-size",
        10,
        "--epochs",
        4,
        "--halving",
        2,
        "--out",
        out,
        *more,
    ]


def test_a_two_process_sweep_writes_the_one_process_results(idx_dir, tmp_path):
    """8 members sharded over two processes, with successive halving (re-stacked 8 → 4 → 2 members
    across processes) and the layout probe (--layout-probe always; the processes take process 0's
    pick): results.csv equals the one-process sweep's with that layout
    (accuracies exactly, losses to float32 summation order)."""
    two = tmp_path / "two"
    finish(start_processes(sweep_args(idx_dir, two, "--layout-probe", "always")))
    s = json.loads((two / "summary.json").read_text())
    assert (s["devices"], s["processes"], s["population"]) == (2, 2, [8, 4, 2])
    assert sorted(s["layout_probe"]) == ["2", "8"] and s["chunk_size"] in (2, 8)  # multiples of the 2 devices
    one = tmp_path / "one"
    r = subprocess.run(
        command(*sweep_args(idx_dir, one, "--chunk-size", s["chunk_size"])),
        capture_output=True,
        text=True,
        env=env(),
        timeout=TIMEOUT,
    )
    assert r.returncode == 0, r.stderr
    rows1, rows2 = (list(csv.DictReader(open(d / "results.csv"))) for d in (one, two))
    assert len(rows1) == len(rows2) == 8
    for a, b in zip(rows1, rows2):
        assert a.keys() == b.keys()
        for k in a:
            if k == "train_loss":
                np.testing.assert_allclose(float(a[k]), float(b[k]), rtol=1e-5)
            else:
                assert a[k] == b[k], k


def test_when_a_process_dies_the_other_stops_with_one_line(idx_dir, tmp_path):
    """Kill process 1 (SIGKILL) mid-run: process 0's next collective fails and it exits with code 4 and
    one line, within seconds (README states the bound: at once at the next collective; a process that
    hangs instead is the next test's case)."""
    out = tmp_path / "run"
    p0, p1 = start_processes(train_args(idx_dir, out, "--epochs", 1000), log_dir=tmp_path)
    deadline = time.time() + TIMEOUT
    while "epoch   3" not in (tmp_path / "p0.log").read_text():
        assert p0.poll() is None and time.time() < deadline, (tmp_path / "p0.log").read_text()
        time.sleep(0.2)
    p1.kill()
    killed = time.time()
    p0.wait(timeout=60)
    seconds = time.time() - killed
    log = (tmp_path / "p0.log").read_text()
    assert p0.returncode == 4, log
    assert seconds < 15, seconds
    errors = [line for line in log.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(
        "jaxmlp: error: process 0 of 2: another process of this run is gone"
    )
    assert "Traceback" not in log and "[Gloo]" not in log  # native chatter is filtered
    assert (out / "checkpoint.npz").is_file()  # the finished epochs are kept
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "process lost" and summary["epochs"] >= 3  # the run's files say how it ended
    assert (out / "curves.png").is_file()


def test_a_hung_process_stops_the_other_after_the_peer_timeout(idx_dir, tmp_path):
    """SIGSTOP process 1 (alive, silent, its sockets open: no collective fails): process 0's watcher finds
    it without a heartbeat after jaxmlp.parallel.heartbeat_seconds(--peer-timeout) seconds and ends it
    with one line and exit 4 (JAX alone would abort it with exit 134 and a C++ stack trace, or wait); the
    run's files say how it ended, as they do when a collective fails."""
    import signal

    from jaxmlp.parallel import heartbeat_seconds

    out = tmp_path / "run"
    p0, p1 = start_processes(train_args(idx_dir, out, "--epochs", 1000, "--peer-timeout", 3), log_dir=tmp_path)
    try:
        deadline = time.time() + TIMEOUT
        while "epoch   3" not in (tmp_path / "p0.log").read_text():
            assert p0.poll() is None and time.time() < deadline, (tmp_path / "p0.log").read_text()
            time.sleep(0.2)
        p1.send_signal(signal.SIGSTOP)
        stopped = time.time()
        p0.wait(timeout=60)
        seconds = time.time() - stopped
    finally:
        p1.kill()
    log = (tmp_path / "p0.log").read_text()
    assert p0.returncode == 4, log
    assert seconds < heartbeat_seconds(3) + 10, seconds
    errors = [line for line in log.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "process 1 stopped answering" in errors[0], log
    assert "Traceback" not in log and "[Gloo]" not in log and "--resume" in errors[0]
    summary = json.loads((out / "summary.json").read_text())  # written by the watcher before it left
    assert summary["status"] == "process lost" and summary["epochs"] >= 3 and (out / "curves.png").is_file()


def test_a_process_whose_peers_never_join_stops_after_the_peer_timeout(idx_dir, tmp_path):
    """Process 0 started alone: it waits --peer-timeout seconds, not JAX's 5 minutes, then one line, exit 4."""
    t = time.time()
    r = subprocess.run(
        command(
            *train_args(idx_dir, tmp_path / "run", "--epochs", 1, "--peer-timeout", 2),
            "--coordinator",
            f"127.0.0.1:{free_port()}",
            "--num-processes",
            2,
            "--process-id",
            0,
        ),
        capture_output=True,
        text=True,
        env=env(),
        timeout=TIMEOUT,
    )
    assert r.returncode == 4 and r.stdout == "", (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "did not join within 2 s" in lines[0], r.stderr
    assert time.time() - t < 30 and not (tmp_path / "run").exists()


def test_a_peer_gone_after_the_sweep_s_last_chunk_leaves_process_0_s_results_whole(idx_dir, tmp_path):
    """Process 1 killed once the sweep is done (process 0 has printed its best member and is leaving):
    process 0 keeps every file and exits 0 within the peer timeout, without JAX's abort (exit 134, a C++
    stack trace) at its shutdown."""
    out = tmp_path / "sweep"
    p0, p1 = start_processes(sweep_args(idx_dir, out, "--chunk-size", 4, "--peer-timeout", 3), log_dir=tmp_path)
    deadline = time.time() + TIMEOUT
    while "best member" not in (tmp_path / "p0.log").read_text():
        assert p0.poll() is None and time.time() < deadline, (tmp_path / "p0.log").read_text()
        time.sleep(0.05)
    p1.kill()
    p0.wait(timeout=60)
    log = (tmp_path / "p0.log").read_text()
    assert p0.returncode == 0, log
    assert "Traceback" not in log and "[Gloo]" not in log and "error" not in log.lower(), log
    assert {"results.csv", "summary.json", "best_checkpoint.npz", "search.png"} <= {p.name for p in out.iterdir()}


def test_a_refusal_on_process_0_stops_every_process_with_one_line(idx_dir, tmp_path):
    """An --out that already holds a run: process 0 refuses before the data is loaded, and the other
    process learns it (instead of finding process 0's coordination service gone): exit 2 and one line each."""
    out = tmp_path / "taken"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    procs = start_processes(train_args(idx_dir, out, "--epochs", 1))
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    for p, (_, err) in zip(procs, outs):
        lines = [line for line in err.splitlines() if not line.startswith("[Gloo]")]
        assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("jaxmlp: error: "), err
    assert "already holds a run" in outs[0][1] and "process 0 refused to start the run" in outs[1][1]
    assert sorted(q.name for q in out.iterdir()) == ["summary.json"]


def test_a_sweep_that_loses_a_process_keeps_its_finished_chunks_and_resumes_the_rest(idx_dir, tmp_path):
    """A plain sweep of 4 members in chunks of 2 over two processes: process 1 killed once the first chunk
    is written; process 0 says what is on disk (2 of 4 members) and the resume command, exit 4. Both
    processes started again with --resume train the rest: 4 rows, the first two as they were kept."""
    out = tmp_path / "sweep"
    args = [
        *on_tiny_data("sweep", idx_dir),
        *("--hidden", 16, "--learning-rate", "1e-3,3e-3,1e-2,3e-2", "--batch-size", 10, "--epochs", 12),
        *("--chunk-size", 2, "--peer-timeout", 3, "--out", out),
    ]
    p0, p1 = start_processes(args, log_dir=tmp_path)
    deadline = time.time() + TIMEOUT
    while "members 0–1" not in (tmp_path / "p0.log").read_text():
        assert p0.poll() is None and time.time() < deadline, (tmp_path / "p0.log").read_text()
        time.sleep(0.05)
    p1.kill()
    p0.wait(timeout=60)
    log = (tmp_path / "p0.log").read_text()
    errors = [line for line in log.splitlines() if "error" in line.lower()]
    assert p0.returncode == 4 and len(errors) == 1, log
    assert f"the results of 2 of 4 members (results.csv, best_checkpoint.npz) are in {out}" in errors[0]
    assert "--resume" in errors[0] and "Traceback" not in log
    kept = list(csv.DictReader(open(out / "results.csv")))
    assert [r["member"] for r in kept] == ["0", "1"] and (out / "best_checkpoint.npz").is_file()
    again = tmp_path / "again"
    again.mkdir()
    procs = start_processes([*args, "--resume"], log_dir=again)
    for p in procs:
        p.wait(timeout=TIMEOUT)
    logs = [(again / f"p{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "resuming: 2 of 4 members had finished" in logs[0]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["member"] for r in rows] == ["0", "1", "2", "3"] and rows[:2] == kept
    assert json.loads((out / "summary.json").read_text())["resumed_chunks"] == 1
