"""The jaxmlp command: train / evaluate / gradcheck, and one-line errors with non-zero exit codes."""

import json
import os
import subprocess
import sys

import pytest

from jaxmlp.cli import EXIT_ERROR, main

from conftest import make_idx_dataset


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
    code = main(
        [
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            str(idx_dir),
            "--dev-size",
            "100",
            "--hidden",
            "32",
            "--epochs",
            "3",
            "--batch-size",
            "50",
            "--learning-rate",
            "3e-3",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
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
    code = main(
        [
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            str(idx_dir),
            "--dev-size",
            "100",
            "--hidden",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--matmul-dtype",
            "bfloat16",
            "--scan-unroll",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
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
    code = main(
        [
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            str(idx_dir),
            "--dev-size",
            "100",
            "--out",
            str(out),
            "--no-progress",
            *args,
        ]
    )
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
    off = _hyper(build_parser().parse_args(["train", "--dropout", "0", "--ema", "0"]))
    assert off.dropout_rate is None and off.ema_decay is None  # 0 means the op is absent


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(c in text for c in ("train", "evaluate", "sweep", "gradcheck")) and "``" not in text
