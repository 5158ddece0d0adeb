"""The jaxmlp command: train / evaluate / sweep / gradcheck, resume and interrupts, and every mistake as one
line with its exit code."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import jaxmlp
from jaxmlp.cli import EXIT_ERROR, main

from helpers import make_idx_dataset


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    return make_idx_dataset(tmp_path_factory.mktemp("idx"), n_train=600, n_test=100)


def run_cli(*args):
    """Run the installed console script in a subprocess, as a user would."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "jaxmlp.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_train_then_evaluate(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(small_train(idx_dir, out, "--epochs", "3", "--learning-rate", "3e-3"))
    assert code == 0
    text = capsys.readouterr().out
    assert "epoch   3" in text and "test accuracy" in text
    for f in ("metrics.csv", "curves.png", "checkpoint.npz", "summary.json"):
        assert (out / f).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert main(["evaluate", str(out / "checkpoint.npz"), "--data-dir", str(idx_dir)]) == 0
    line = capsys.readouterr().out
    assert f"accuracy {summary['test_accuracy']:.4f}" in line


def test_train_mixed_precision_records_its_mode(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(small_train(idx_dir, out, "--epochs", "1", "--matmul-dtype", "bfloat16", "--scan-unroll", "2"))
    assert code == 0
    config = json.loads((out / "summary.json").read_text())["config"]
    assert config["model"]["matmul_dtype"] == "bfloat16" and config["scan_unroll"] == 2


def test_gradcheck_json(capsys, x64):  # x64: gradcheck turns float64 on; the fixture restores it
    code = main(
        [
            "gradcheck",
            "--hidden",
            "6,5,4",
            "--activation",
            "tanh",
            "--dropout",
            "0.3",
            "--batchnorm",
            "--l2",
            "1e-3",
            "--input-dim",
            "7",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"]
    assert report["max_rel_error_vs_autodiff"] <= 1e-10
    assert report["max_rel_diff_vs_finite_differences"] < 1e-7
    assert [a["name"] for a in report["arrays"]][:3] == ["layer0.W", "layer0.beta", "layer0.gamma"]
    assert len(report["arrays"]) == 3 * 3 + 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--learning-rate", "0"], "learning rate must be a finite number > 0"),
        (["--learning-rate", "nan"], "learning rate must be a finite number > 0"),
        (["--dropout", "1"], r"dropout rate must lie in \[0, 1\)"),
        (["--activation", "gelu"], "unknown activation 'gelu'"),
        (["--optimizer", "lamb"], "unknown optimizer 'lamb'"),
        (["--epochs", "0"], "epochs must be ≥ 1"),
        (["--scan-unroll", "0"], "scan unroll must be ≥ 1"),
        (["--batch-size", "100000"], "batch size 100000 is larger than the 500 training examples"),
    ],
)
def test_bad_options_fail_with_one_line(idx_dir, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    code = main(small_train(idx_dir, out, *args))
    err = capsys.readouterr().err.strip()
    assert code == EXIT_ERROR
    assert err.startswith("jaxmlp: error: ") and "\n" not in err
    import re

    assert re.search(message, err)
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize(
    "hidden, message",
    [
        ("512,0", "hidden widths must be ≥ 1"),
        ("512,,512", "empty hidden layer width"),
        ("", "empty hidden layer width"),
        ("5x5", "comma-separated"),
    ],
)
def test_empty_or_zero_width_hidden_layer_is_a_usage_error(capsys, hidden, message):
    with pytest.raises(SystemExit) as e:
        main(["train", "--hidden", hidden])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err


def test_hidden_none_is_softmax_regression():
    from jaxmlp.cli import _hidden

    assert _hidden("none") == () and _hidden("64, 32") == (64, 32)


def test_subprocess_missing_data_file_no_traceback(idx_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in idx_dir.iterdir():
        if not f.name.startswith("t10k-labels"):
            (broken / f.name).write_bytes(f.read_bytes())
    r = run_cli("train", "--dataset", "mnist", "--data-dir", str(broken), "--out", str(tmp_path / "o"))
    assert r.returncode == EXIT_ERROR
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"jaxmlp: error: {broken}: missing t10k-labels-idx1-ubyte.gz (also accepted: the raw and dotted "
        f"spellings, e.g. train-images.idx3-ubyte)"
    ]
    assert not (tmp_path / "o").exists()


def test_the_bare_train_command_is_the_recommended_default():
    """`jaxmlp train` alone trains what `make train` trains (README): 784-512-512-10 ReLU, dropout 0.3,
    Adam 1e-3 with a cosine schedule, parameter EMA 0.999, batch 128, 30 epochs, Fashion-MNIST."""
    from jaxmlp.cli import _hyper, build_parser

    args = build_parser().parse_args(["train"])
    assert (
        args.dataset,
        args.hidden,
        args.activation,
        args.optimizer,
        args.schedule,
        args.batch_size,
        args.epochs,
        args.out,
    ) == ("fashion-mnist", (512, 512), "relu", "adam", "cosine", 128, 30, "runs/default")
    h = _hyper(args)
    assert (h.learning_rate, h.dropout_rate, h.ema_decay, h.input_dropout_rate) == (1e-3, 0.3, 0.999, None)
    assert args.ema_schedule == "warmup"  # the EMA warm-up (experiments/RESULTS.md, ema_default)
    off = _hyper(build_parser().parse_args(["train", "--dropout", "0", "--ema", "0"]))
    assert off.dropout_rate is None and off.ema_decay is None  # 0 means the op is absent


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(c in text for c in ("train", "evaluate", "sweep", "gradcheck")) and "``" not in text


def outcome(argv, capsys):
    """(exit code, stderr) of `jaxmlp ARGV`, in process; argparse's exits included."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def small_train(idx_dir, out, *more):
    return [
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        str(idx_dir),
        "--dev-size",
        "100",
        "--hidden",
        "32",
        "--batch-size",
        "50",
        "--epochs",
        "2",
        "--no-progress",
        "--out",
        str(out),
        *more,
    ]


@pytest.fixture(scope="module")
def finished_run(idx_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(small_train(idx_dir, out, "--dropout", "0.2", "--learning-rate", "3e-3")) == 0
    return out


MISTAKES = [  # (what the user gets wrong, the arguments, the exit code, what the one line must say)
    ("an output path that cannot be created", ["--out", "/proc/nope"], 2, "cannot write to output folder /proc/nope"),
    (
        "a network that cannot fit in memory",
        ["--hidden", "200000,200000"],
        2,
        r"needs [\d.]+ GiB but cpu memory has [\d.]+ GiB free; use narrower or fewer --hidden layers",
    ),
    ("a width that is not a number", ["--hidden", "512,abc"], 2, "--hidden takes comma-separated widths"),
    ("an unknown option", ["--learning_rate", "1"], 2, "unrecognized arguments: --learning_rate"),
    ("an EMA decay out of range", ["--ema", "1.5"], 2, r"ema decay must lie in \[0, 1\)"),
    ("a decay period of 0", ["--schedule", "step", "--decay-steps", "0"], 2, "decay steps must be a finite number > 0"),
    ("an init scale that is not a number", ["--init-scale", "nan"], 2, "init scale must be a finite number ≥ 0"),
    (
        "an option of another command",
        ["--chunk-size", "3"],
        2,
        r"unrecognized arguments: --chunk-size 3 \(`jaxmlp train --help` lists the options\)",
    ),
    (
        "a learning rate that diverges",
        ["--optimizer", "sgd", "--learning-rate", "1e30"],
        3,
        "loss became non-finite at epoch 1",
    ),
]


@pytest.mark.parametrize("what, args, code, message", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_every_mistake_is_one_line_with_its_exit_code(idx_dir, tmp_path, capsys, what, args, code, message):
    import re

    out = tmp_path / "run"
    argv = small_train(idx_dir, out) + args
    got, err = outcome(argv, capsys)
    assert got == code, err
    assert err.startswith("jaxmlp: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(message, err), err
    if code == 2:
        assert not out.exists()  # refused before anything was written


def test_output_folder_mistakes(idx_dir, finished_run, tmp_path, capsys):
    import re

    def small_sweep(*more):
        return [
            "sweep",
            "--data-dir",
            str(idx_dir),
            "--dataset",
            "mnist",
            "--dev-size",
            "100",
            "--out",
            str(tmp_path / "s"),
            *more,
        ]

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for argv, message in [
        (small_train(idx_dir, a_file), f"output folder {a_file} is a file"),
        (
            small_train(idx_dir, finished_run),
            re.escape(
                "already holds a run (checkpoint.npz, metrics.csv, summary.json, curves.png); pass --resume to "
                "continue it, --overwrite to replace it"
            ),
        ),
        (small_train(idx_dir, tmp_path / "none", "--resume"), "--resume: no checkpoint at"),
        (
            small_train(idx_dir, finished_run, "--resume", "--hidden", "64"),
            r"cannot resume with a different structure: --hidden 32 \(checkpoint\) vs 64 \(now\)",
        ),
        (
            small_train(idx_dir, finished_run, "--resume", "--dropout", "0"),
            r"--dropout \(on/off\) on \(checkpoint\) vs off \(now\)",
        ),
        (["evaluate", str(a_file)], f"no checkpoint.npz .* in {tmp_path}"),
        (["evaluate", str(tmp_path / "x.npz")], "no such checkpoint file"),
        (
            small_sweep("--chunk-size", "0"),
            "chunk size must be ≥ 1, got 0",
        ),
        (
            small_sweep("--random", "0"),
            "--random takes a number of points ≥ 1, got 0",
        ),
        (small_sweep("--coordinator", "127.0.0.1:1234"), "--coordinator, --num-processes and --process-id go together"),
        (
            small_sweep("--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"),
            "--coordinator takes HOST:PORT",
        ),
        (
            small_sweep("--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"),
            r"--process-id must lie in \[0, --num-processes\)",
        ),
        (small_train(idx_dir, tmp_path / "r", "--num-processes", "2"), "need --data-parallel"),
        (small_sweep("--peer-timeout", "0"), r"--peer-timeout must be a number of seconds > 0, got 0"),
        (small_sweep("--peer-timeout", "inf"), r"--peer-timeout must be a number of seconds > 0, got inf"),
        (
            small_sweep("--hidden", "200000,200000"),
            r"one member of this sweep \(16-200000-200000-10: its state and the data\) needs [\d.]+ GiB but cpu "
            r"memory has [\d.]+ GiB free; use narrower or fewer --hidden layers$",
        ),
        (small_sweep("--halving", "1"), "the halving rate η must be an integer ≥ 2, got 1"),
        (small_sweep("--pbt", "2", "--learning-rate", "1e-3"), "PBT perturbs the swept hyperparameters"),
        (small_sweep("--pbt", "2", "--halving", "3"), "give --halving or --pbt, not both"),
        (small_sweep("--halving", "3", "--epochs", "2"), "no rung before the end"),
        (small_sweep("--halving", "2", "--epochs", "2"), "successive halving compares members: give at least 2"),
        (["gradcheck", "--batch-size", "0"], "--batch-size and --fd-samples must be ≥ 1, got 0 and 64"),
        (
            ["gradcheck", "--hidden", "200000,200000"],
            r"checking the gradients of 784-200000-200000-10 in float64 needs [\d.]+ GiB but cpu memory has",
        ),
    ]:
        import re

        code, err = outcome(argv, capsys)
        assert code == EXIT_ERROR and err.startswith("jaxmlp: error: ") and err.count("\n") == 1, err
        assert re.search(message, err), err
    assert a_file.read_text() == "x"


def test_resume_takes_the_checkpoints_options_and_applies_changed_numbers(idx_dir, finished_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    # only --epochs given: the run goes on as it was (32 hidden units, dropout 0.2, learning rate 3e-3)
    assert (
        main(["train", "--data-dir", str(idx_dir), "--out", str(out), "--resume", "--epochs", "3", "--no-progress"])
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["epochs"] == 3 and s["config"]["model"]["sizes"] == [16, 32, 10] and s["status"] == "finished"
    assert s["hyper"]["dropout_rate"] == pytest.approx(0.2) and s["hyper"]["learning_rate"] == pytest.approx(3e-3)
    # a changed number is applied from the next epoch on, said, and recorded
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--data-dir",
                str(idx_dir),
                "--out",
                str(out),
                "--resume",
                "--epochs",
                "4",
                "--learning-rate",
                "1e-3",
                "--no-progress",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert "resume: learning_rate 0.003 → 0.001" in said and "resume: the run now ends at epoch 4 (was 3)" in said
    s = json.loads((out / "summary.json").read_text())
    assert s["hyper"]["learning_rate"] == pytest.approx(1e-3)
    change = [c for c in s["hyper_changes"] if c["field"] == "learning_rate"]
    assert change == [{"epoch": 4, "field": "learning_rate", "from": pytest.approx(3e-3), "to": pytest.approx(1e-3)}]


def test_evaluate_takes_the_run_folder_or_its_summary(finished_run, idx_dir, capsys):
    lines = []
    for target in (finished_run, finished_run / "summary.json", finished_run / "checkpoint.npz"):
        assert main(["evaluate", str(target), "--data-dir", str(idx_dir)]) == 0
        lines.append(capsys.readouterr().out)
    assert lines[0] == lines[1] == lines[2] and "accuracy" in lines[0]


def _signalled_once_written(args, path, sig):
    """Run `python -m jaxmlp.cli ARGS` with SIGINT handled as from a terminal (a test run started in the
    background of a non-interactive shell ignores SIGINT, and Python keeps an ignored SIGINT ignored),
    send ``sig`` once ``path`` exists; (the finished process, its stderr)."""
    as_from_a_terminal = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'jaxmlp.cli'; runpy.run_module('jaxmlp.cli', run_name='__main__')"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", as_from_a_terminal, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    deadline = time.time() + 120
    while not path.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    return p, err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_keeps_its_record_and_says_how_to_resume(idx_dir, tmp_path, sig, code):
    out = tmp_path / "run"
    args = small_train(idx_dir, out, "--batch-size", "10", "--epochs", "400")
    p, err = _signalled_once_written(args, out / "metrics.csv", sig)
    assert p.returncode == code, err
    err = err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"jaxmlp: {sig.name}: stopped after ") and f"are in {out}" in err
    assert err.endswith("resume with: jaxmlp " + " ".join(args) + " --resume")
    summary = json.loads((out / "summary.json").read_text())
    done = summary["epochs"]
    assert summary["status"] == "interrupted" and done >= 1
    assert f"stopped after {done} of 400 epochs" in err
    assert len(list(csv.DictReader(open(out / "metrics.csv")))) == done
    assert (out / "curves.png").is_file() and (out / "checkpoint.npz").is_file()
    assert not list(out.glob("*.tmp"))


def test_an_interrupted_sweep_keeps_its_finished_chunks_and_resumes_the_rest(idx_dir, tmp_path, capsys):
    """SIGINT to a real `jaxmlp sweep` once its first chunk is written: exit 130, one line saying what is on
    disk and the resume command; that command trains the rest (its rows: the kept ones unchanged)."""
    out = tmp_path / "sweep"
    args = [
        *("sweep", "--dataset", "mnist", "--data-dir", str(idx_dir), "--dev-size", "100", "--hidden", "16"),
        *("--learning-rate", "1e-3,3e-3,1e-2", "--batch-size", "10", "--epochs", "40", "--chunk-size", "1"),
        *("--out", str(out)),
    ]
    p, err = _signalled_once_written(args, out / "results.csv", signal.SIGINT)
    assert p.returncode == 130, err
    err = err.strip()
    # the signal lands while member 1 trains, or (on a loaded machine) later: the line says how many are kept
    done = int(re.match(r"jaxmlp: SIGINT: stopped after (\d) of 3 members", err).group(1))
    assert "\n" not in err and 1 <= done <= 2, err
    assert f"(results.csv, best_checkpoint.npz) are in {out}" in err
    assert err.endswith("resume the rest with: jaxmlp " + " ".join(args) + " --resume")
    kept = list(csv.DictReader(open(out / "results.csv")))
    assert [r["member"] for r in kept] == [str(m) for m in range(done)] and not (out / "summary.json").exists()
    assert main([*args, "--resume"]) == 0
    assert f"resuming: {done} of 3 members had finished" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["member"] for r in rows] == ["0", "1", "2"] and rows[:done] == kept
    assert main([*args, "--resume"]) == 2  # finished: nothing to resume
    assert "holds no unfinished sweep to resume" in capsys.readouterr().err
    assert main([*args, "--resume", "--halving", "2", "--epochs", "2"]) == 2
    assert "--resume continues a plain sweep" in capsys.readouterr().err


def test_a_signal_ends_the_process_within_seconds_even_inside_one_long_native_call(tmp_path):
    """The main thread stuck in one native call (here a 10000² BLAS product, tens of seconds on 2 cores;
    a long XLA compile or a swapping allocation alike) cannot run Python's handler: the watcher thread
    ends the process FORCED_EXIT_SECONDS after the signal, with one line and 143."""
    from jaxmlp.cli import FORCED_EXIT_SECONDS

    child = (
        "import sys, numpy as np, jaxmlp.cli as c\n"
        "def stuck(args):\n"
        "    a = np.ones((10000, 10000), np.float32)\n"
        "    print('ready', flush=True)\n"
        "    (a @ a).sum()\n"
        "    print('the product finished', flush=True)\n"
        "    return 0\n"
        "c.cmd_gradcheck = stuck\n"
        "sys.argv = ['jaxmlp', 'gradcheck']\n"
        "c.console()\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # inside the product
    sent = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    took = time.monotonic() - sent
    assert p.returncode == 143, err
    assert "finished" not in out  # ended inside the call, not after it
    stuck = "jaxmlp: SIGTERM: stopped inside a long computation (compiling or running on the device)"
    assert err.strip() == stuck + "; nothing was written", err
    assert took < FORCED_EXIT_SECONDS + 5, took  # the margin: a loaded machine's scheduling, not the rule


def test_the_last_words_of_a_forced_ending_say_what_is_on_disk(tmp_path):
    from jaxmlp import cli

    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--epochs", "3"]
    words = cli._last_words(cli._parse(argv), argv)
    assert words("SIGINT").endswith(f"no epoch of this run had finished; start it again with: jaxmlp {' '.join(argv)}")
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(b"")
    assert words("SIGTERM").startswith("jaxmlp: SIGTERM: stopped inside a long computation")
    assert words("SIGTERM").endswith(f"is in {out}; resume with: jaxmlp {' '.join(argv)} --resume")


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"jaxmlp {jaxmlp.__version__}"


def test_gradcheck_at_a_trained_models_parameters(idx_dir, tmp_path, capsys, x64):
    """gradcheck --checkpoint: the hand-derived gradients of a trained batch-norm network (γ ≠ 1,
    β ≠ 0, running statistics moved) on real training examples equal jax.grad and finite differences."""
    out = tmp_path / "bn"
    assert main(small_train(idx_dir, out, "--batchnorm", "--epochs", "3", "--ema", "0", "--dropout", "0.2")) == 0
    capsys.readouterr()
    assert main(["gradcheck", "--checkpoint", str(out), "--data-dir", str(idx_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["max_rel_error_vs_autodiff"] <= 1e-10
    assert report["max_rel_diff_vs_finite_differences"] < 1e-7 and report["finite_differences"] == "checked"
    assert str(out) in report["at"] and [a["name"] for a in report["arrays"]][:3] == [
        "layer0.W",
        "layer0.beta",
        "layer0.gamma",
    ]
    assert main(["gradcheck", "--checkpoint", str(out), "--data-dir", str(idx_dir), "--float32"]) == 0
    assert "finite differences skipped (float32 cannot resolve them" in capsys.readouterr().out


def test_a_signal_inside_zipfile_is_noted_not_raised():
    """A signal landing inside zipfile (np.savez writing a checkpoint) would leave a half-built ZipFile
    that prints "Exception ignored … AttributeError" at its __del__: the handler defers it instead."""
    import signal as signal_module

    from jaxmlp.cli import _Signals

    signals = _Signals()
    inside = {"handler": signals.handler, "sys": sys, "SIGTERM": signal_module.SIGTERM}
    exec(compile("handler(SIGTERM, sys._getframe())", f"{os.sep}lib{os.sep}zipfile.py", "exec"), inside)
    assert signals.received == ["SIGTERM"] and not signals.answered.is_set()  # noted, not raised
    with pytest.raises(KeyboardInterrupt):
        signals.handler(signal_module.SIGTERM, sys._getframe())  # sent again outside: raised


def test_a_signal_inside_a_gc_callback_is_noted_not_raised():
    """Python would swallow (and print) an exception raised there: the note alone stops fit."""
    import gc

    from jaxmlp import cli

    signals, raised = cli._Signals(), []
    handler, received = signals.handler, signals.received

    def callback(phase, info):
        try:
            handler(signal.SIGINT, sys._getframe())
        except KeyboardInterrupt:
            raised.append(1)

    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    assert received and not raised and not signals.answered.is_set()
    with pytest.raises(KeyboardInterrupt):  # anywhere else it raises
        handler(signal.SIGINT, sys._getframe())
    assert signals.answered.is_set()
    handler(signal.SIGTERM, sys._getframe())  # once: a later signal finds the ending under way
    assert received[-1] == "SIGTERM" and signals.stop() == "SIGINT"


def _rendered_option_helps(parser):
    """(subcommand, option, its help as --help prints it) for every option that takes a value."""
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in sub.choices.items():
        fmt = sp._get_formatter()
        for a in sp._actions:
            if a.option_strings and a.nargs != 0:  # flags (store_true, --help, --version) default to off
                yield name, a.option_strings[-1], fmt._expand_help(a) if a.help else ""


def test_help_shows_every_default(capsys):
    """Every option of every subcommand that takes a value says its default in --help, and the number
    shown is the one the parser uses (for options whose default is a value; None ones say in words)."""
    from jaxmlp.cli import build_parser

    parser = build_parser()
    missing = [(c, o) for c, o, text in _rendered_option_helps(parser) if "default" not in text]
    assert not missing, missing
    helps = {(c, o): text for c, o, text in _rendered_option_helps(parser)}
    assert helps[("train", "--patience")].endswith("(default 0)")
    assert helps[("train", "--ema-schedule")].endswith("(default warmup)")
    assert helps[("sweep", "--b2")] == "Hyper.b2 (default 0.999)" and helps[("sweep", "--ema")].endswith(
        "(default off)"
    )
    # --peer-timeout's default is filled in by initialize, not the parser: its help quotes the constant
    assert helps[("train", "--peer-timeout")].endswith(f"(default {jaxmlp.parallel.PEER_TIMEOUT:g})")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(default 0.999)" in capsys.readouterr().out


def test_the_options_a_run_and_a_sweep_share_exist_in_both_and_mean_the_same():
    """How a command runs (its output, its progress, its processes) is asked the same way in train and
    sweep: the same flags, the same kind of value and default."""
    import argparse

    from jaxmlp.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {
        name: {a.option_strings[-1]: a for a in sp._actions if a.option_strings} for name, sp in sub.choices.items()
    }
    common = [
        "--out",
        "--overwrite",
        "--resume",
        "--no-progress",
        "--coordinator",
        "--num-processes",
        "--process-id",
        "--peer-timeout",
        "--seed",
        "--epochs",
        "--batch-size",
    ]
    for flag in common:
        a, b = options["train"][flag], options["sweep"][flag]
        assert (type(a), a.type, a.nargs) == (type(b), b.type, b.nargs), flag
        assert a.default == b.default or flag in ("--out", "--epochs"), flag  # runs/default vs runs/sweep; 30 vs 5


def test_ema_schedule_option_sets_the_runs_config(idx_dir, tmp_path):
    out = tmp_path / "run"
    assert main(small_train(idx_dir, out, "--epochs", "1", "--ema-schedule", "debias")) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["ema_schedule"] == "debias"


def test_a_refused_resume_prints_nothing_before_its_one_line(idx_dir, finished_run, capsys):
    for more, message in (
        (["--resume", "--hidden", "64"], "cannot resume with a different structure: --hidden 32"),
        (["--resume", "--overwrite"], "--resume continues the run in .* and --overwrite replaces it"),
    ):
        import re

        try:
            code = main(small_train(idx_dir, finished_run, *more))
        except SystemExit as e:
            code = e.code
        captured = capsys.readouterr()
        assert code == EXIT_ERROR and captured.out == "", captured.out  # no network summary first
        assert captured.err.count("\n") == 1 and re.search(message, captured.err), captured.err


def test_dev_size_0_trains_without_selection_and_refuses_patience(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [a if a != "100" else "0" for a in small_train(idx_dir, out)]  # --dev-size 0
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dev_accuracy"] is None and summary["selected_by"] == "last epoch (no dev split)"
    assert "no dev split" in capsys.readouterr().out
    code, err = outcome([*argv, "--patience", "2", "--overwrite"], capsys)
    assert code == EXIT_ERROR and "early stopping (patience) needs a dev split" in err


def _own_data(folder, n=400, features=6, classes=4):
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, features)) + 3 * np.eye(classes, features)[y]
    np.savez(folder / "mine.npz", x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    return folder / "mine.npz"


def test_your_own_data_file_trains_evaluates_resumes_and_sweeps(tmp_path, capsys):
    """--data: the network's sizes follow the file (6 features, 4 classes); evaluate re-splits it as in
    training (its dev accuracy equals the one the run recorded, its test accuracy the summary's); a
    resume finds the file from the checkpoint; a sweep takes it too; another file is refused."""
    import numpy as np

    data = _own_data(tmp_path)
    out = tmp_path / "run"
    base = ["train", "--data", str(data), "--hidden", "16", "--epochs", "3", "--learning-rate", "1e-2", "--no-progress"]
    assert main([*base, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["model"]["sizes"] == [6, 16, 4] and summary["dataset"] == str(data)
    assert summary["dev_size"] == 30 and summary["train_size"] == 270  # a tenth of 300 held out for dev
    capsys.readouterr()
    for split, expected in (("test", summary["test_accuracy"]), ("dev", summary["dev_accuracy"])):
        assert main(["evaluate", str(out), "--split", split]) == 0
        assert f"{split}: accuracy {expected:.4f}" in capsys.readouterr().out
    assert main(["train", "--out", str(out), "--resume", "--epochs", "4", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 4
    sweep_out = tmp_path / "sweep"
    argv = ["sweep", "--data", str(data), "--learning-rate", "1e-3,1e-2", "--hidden", "8", "--epochs", "1"]
    assert main([*argv, "--out", str(sweep_out)]) == 0
    assert len(list(csv.DictReader(open(sweep_out / "results.csv")))) == 2
    other = tmp_path / "other.npz"
    np.savez(other, x_train=np.ones((300, 6)) * np.arange(6), y_train=np.arange(300) % 4)
    code, err = outcome(["evaluate", str(out), "--data", str(other)], capsys)
    assert code == EXIT_ERROR and "not the data this model was trained on" in err


def test_bad_data_files_are_one_line_each(tmp_path, capsys):
    import numpy as np

    (tmp_path / "labels.csv").write_text("a,b,label\n1,2,0\n3,4,5.5\n")
    np.savez(tmp_path / "nan.npz", x_train=np.full((20, 3), np.nan), y_train=np.arange(20) % 2)
    cases = [
        (tmp_path / "labels.csv", "expected integer class labels 0, 1, …, found 5.5"),
        (tmp_path / "nan.npz", "training features: 60 NaN or infinite values"),
        (tmp_path / "none.npz", "no such file"),
    ]
    for path, message in cases:
        code, err = outcome(["train", "--data", str(path), "--out", str(tmp_path / "r"), "--no-progress"], capsys)
        assert code == EXIT_ERROR and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()
