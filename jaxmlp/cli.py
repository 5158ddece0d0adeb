"""The jaxmlp command: train, evaluate, sweep, gradcheck.

Every expected failure (bad option, bad data, bad checkpoint, divergence) prints one line
``jaxmlp: error: …`` on stderr and exits non-zero, without a traceback. The commands call the public
API (``import jaxmlp as jm``) and nothing else.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import signal
import sys
from pathlib import Path

EXIT_ERROR = 2
EXIT_DIVERGED = 3
EXIT_GRADCHECK = 1
EXIT_LOST_PROCESS = 4  # another process of a multi-process run died
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as shells report it
FORCED_EXIT_SECONDS = 3.0  # a signal not answered by then (the main thread stuck in native code) ends the process


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default: an option whose help does not say it already gets
    "(default X)"; flags (default off) and options whose default is None say in words what that means."""

    def _get_help_string(self, action):
        text = action.help or ""
        flag_or_none = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or not action.option_strings or flag_or_none:
            return text
        return f"{text} (default %(default)s)" if text else "default %(default)s"


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, ``jaxmlp: error: …``, exit 2 (no usage dump), and whose
    help shows every default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_ERROR, f"jaxmlp: error: {message} (`{self.prog} --help` lists the options)\n")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so that ``fit`` stops the same way as on Ctrl-C."""

    signal_name = "SIGTERM"


def _in_gc_callback(frame) -> bool:
    """Whether ``frame`` runs inside a garbage-collection callback (JAX registers one), where Python would
    print and swallow an exception raised by a signal handler, or inside ``zipfile`` (NumPy's savez writes
    checkpoints through it), whose half-built ZipFile prints "Exception ignored …" when interrupted."""
    codes = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        if frame.f_code in codes or frame.f_code.co_filename.endswith(f"{os.sep}zipfile.py"):
            return True
        frame = frame.f_back
    return False


class _Signals:
    """The SIGINT/SIGTERM of one command: which arrived (``received``, in order) and whether one has been
    answered (``answered``: an interrupt raised in the main thread, or ``fit``'s ``stop`` asked).

    ``handler`` notes the signal and raises the interrupt, once: a later signal finds the first one's
    ending under way and is only noted. Inside a garbage-collection callback (Python would print and
    swallow the exception) or inside ``zipfile`` (a checkpoint being written) it does not raise: ``watch``
    sends the signal again a moment later.

    ``watch(last_words)`` makes every signal end the process within ``grace`` seconds even while the main
    thread sits in one long native call (an XLA computation or compile, a BLAS call, an allocation that
    swaps) where Python's handler cannot run: the C-level handler writes the signal's number to a wakeup
    pipe (``signal.set_wakeup_fd``) that a daemon thread reads; a signal not answered within ``grace``
    seconds gets ``last_words(name)`` (one line) on stderr and exit code 128 + its number, through
    ``os._exit`` (the interpreter's shutdown would wait for the native call). Returns a function that
    ends the watch and restores the previous wakeup fd."""

    def __init__(self, grace: float = FORCED_EXIT_SECONDS):
        import threading

        self.received, self.answered, self.grace = [], threading.Event(), grace

    def handler(self, signum, frame):
        name = signal.Signals(signum).name
        self.received.append(name)
        if self.answered.is_set() or _in_gc_callback(frame):
            return
        self.answered.set()
        raise _Terminated() if name == "SIGTERM" else KeyboardInterrupt()

    def stop(self):
        """``fit``'s ``stop``: the first signal's name once one arrived (and that answers it), else None."""
        if not self.received:
            return None
        self.answered.set()
        return self.received[0]

    def watch(self, last_words):
        import threading
        import time

        if threading.current_thread() is not threading.main_thread():  # no signals there to watch
            return lambda: None
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

        def wait_for_an_answer(signum):
            seen, deadline = len(self.received), time.monotonic() + self.grace
            while not self.answered.is_set() and time.monotonic() < deadline:
                time.sleep(0.1)
                if len(self.received) > seen and not self.answered.is_set():  # noted in a gc callback
                    seen = len(self.received)
                    os.kill(os.getpid(), signum)  # again, to be raised outside the callback
            if not self.answered.is_set():  # the main thread never got back to Python in time
                name = signal.Signals(signum).name
                print(last_words(name), file=sys.stderr, flush=True)
                os._exit(EXIT_SIGNAL[name])

        def run():
            while True:
                for signum in os.read(read_end, 64):
                    if signum == 0:  # the command is over
                        os.close(read_end)
                        os.close(write_end)
                        return
                    if signum in (signal.SIGINT, signal.SIGTERM) and not self.answered.is_set():
                        wait_for_an_answer(signum)

        threading.Thread(target=run, name="jaxmlp-signals", daemon=True).start()

        def end():
            signal.set_wakeup_fd(previous)
            os.write(write_end, b"\0")  # the thread closes both ends and returns

        return end


def _last_words(args, argv):
    """The line of an ending forced by ``_Signals.watch``: what is on disk and how to go on."""

    def words(name: str) -> str:
        cut = f"jaxmlp: {name}: stopped inside a long computation (compiling or running on the device)"
        out = getattr(args, "out", None)
        if args.command == "train" and out is not None:
            if (Path(out) / "checkpoint.npz").is_file():
                resume = _resume_command(argv)
                return f"{cut}; the checkpoint of the last finished epoch is in {out}; resume with: {resume}"
            return f"{cut}; no epoch of this run had finished; start it again with: {_again_command(argv)}"
        if args.command == "sweep" and out is not None and _sweep_kept(out):
            return f"{cut}; {_sweep_kept(out)}; resume the rest with: {_resume_command(argv)}"
        return f"{cut}; nothing was written"

    return words


def _hidden(text: str) -> tuple:
    """'512,512' -> (512, 512); 'none' -> () (softmax regression). Empty or zero widths are errors."""
    if text.strip().lower() == "none":
        return ()
    parts = [p.strip() for p in text.split(",")]
    if any(p == "" for p in parts):
        raise argparse.ArgumentTypeError(
            f"empty hidden layer width in {text!r}: give widths like 512,512 (or none for softmax regression)"
        )
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated widths like 512,512, not {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden widths must be ≥ 1, got {text!r}")
    return sizes


def _network_options(p: argparse.ArgumentParser, dropout: float = 0.0) -> None:
    g = p.add_argument_group("network")
    g.add_argument(
        "--hidden",
        type=_hidden,
        default=(512, 512),
        help="hidden widths, comma-separated (default 512,512; none for softmax regression)",
    )
    g.add_argument("--activation", default="relu", help="relu | tanh | sigmoid (default relu)")
    g.add_argument(
        "--dropout",
        type=float,
        default=dropout,
        help="dropout rate = P(drop) after each hidden layer; 0: none (default %(default)g)",
    )
    g.add_argument("--input-dropout", type=float, default=0.0, help="dropout rate on the input pixels (default 0)")
    g.add_argument("--batchnorm", action="store_true", help="batch normalization before activations")
    g.add_argument("--bn-momentum", type=float, default=0.9, help="running-average momentum (default 0.9)")
    g.add_argument("--l2", type=float, default=0.0, help="λ of the (λ/2m)Σ‖W‖² penalty (default 0)")
    g.add_argument("--init", default="he", help="he | xavier | seed (randn*0.01) (default he)")
    g.add_argument("--init-scale", type=float, default=1.0, help="multiplies the init std (default 1)")
    g.add_argument("--seed", type=int, default=0, help="seed for init, data split and shuffles (default 0)")


def _speed_options(g) -> None:
    g.add_argument(
        "--matmul-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="bfloat16: mixed precision, bf16 matmul operands with float32 accumulation, "
        "weights and loss (fast on GPUs/TPUs; slower on most CPUs) (default float32)",
    )
    g.add_argument(
        "--scan-unroll",
        type=int,
        default=1,
        help="training steps per iteration of the epoch's compiled loop (default 1)",
    )


def _ema_schedule_option(g) -> None:
    g.add_argument(
        "--ema-schedule",
        default="warmup",
        choices=["warmup", "debias", "constant"],
        help="the EMA's decay over steps: warmup min(DECAY, (1+t)/(10+t)) as TensorFlow's; debias as optax's "
        "ema(debias=True); constant DECAY from the initial parameters (jaxmlp ≤ 0.3.0) (default %(default)s)",
    )


def _process_options(g) -> None:
    from jaxmlp.parallel import PEER_TIMEOUT

    g.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="several processes: process 0's address, the same for all (with --num-processes, --process-id; "
        "default: JAX's cluster auto-detection, one process without a cluster)",
    )
    g.add_argument(
        "--num-processes",
        type=int,
        default=None,
        metavar="N",
        help="processes in the run (default: with --coordinator, required)",
    )
    g.add_argument(
        "--process-id",
        type=int,
        default=None,
        metavar="I",
        help="this process, 0 … N-1 (default: with --coordinator, required)",
    )
    g.add_argument(
        "--peer-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="several processes: how long a process waits for the others to join, and for a peer that stopped "
        f"answering, before it stops with exit 4 (default {PEER_TIMEOUT:g})",
    )


def _join_processes(args, enabled: bool = True):
    """``jm.parallel.initialize`` from the process options (before anything touches JAX); returns the
    ``print`` of this process: process 0 speaks, the others are quiet. Several processes: a peer lost
    or hung ends this one with one line (``_lost_words``) and exit 4; native libraries' chatter on
    stdout and stderr is filtered (``_filter_native_output``)."""
    import jax

    import jaxmlp as jm

    given = [args.coordinator, args.num_processes, args.process_id]
    if not enabled:
        if any(v is not None for v in given) or args.peer_timeout is not None:
            raise ValueError("--coordinator, --num-processes, --process-id and --peer-timeout need --data-parallel")
        return print
    timeout = jm.parallel.PEER_TIMEOUT if args.peer_timeout is None else args.peer_timeout
    words = _lost_words(args, args.argv)

    def on_lost(message):
        _tell_filter("said")
        jm.parallel.leave(f"{message}; {words()}")

    try:
        jm.parallel.check_processes(*given, timeout)  # mistakes first: before the filter takes the terminal
        args.peer_timeout = timeout
        if args.coordinator is not None:  # before the first collective: gloo speaks at its first connection
            _filter_native_output(args.process_id, args.num_processes, timeout)
        jm.parallel.initialize(*given, peer_timeout=timeout, on_lost=on_lost)
    except ValueError as e:  # the library names its parameters; here they are options
        raise ValueError(
            str(e)
            .replace("coordinator,", "--coordinator,")
            .replace("num_processes", "--num-processes")
            .replace("process_id", "--process-id")
            .replace("coordinator takes", "--coordinator takes")
            .replace("peer_timeout", "--peer-timeout")
        ) from None
    _tell_filter("joined")
    return print if jax.process_index() == 0 else (lambda *a, **k: None)


_NATIVE_FILTER = r"""
import re, sys
pid, n, timeout = sys.argv[1:4]
absl = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d")
ours = ("jaxmlp", "Traceback", "Fatal Python error", "Segmentation fault")
chatter = aborted = said = joined = False
for line in sys.stdin:
    if line == "\0jaxmlp: joined\n":
        joined = True
    elif line == "\0jaxmlp: said\n":
        said = True  # the process said its ending itself
    elif aborted:
        pass  # the stack trace of JAX's abort
    elif "Terminating process because the JAX distributed service" in line:
        aborted = True
    elif line.startswith("[Gloo]") or absl.match(line):
        chatter = True
    elif not (chatter and (not line.strip() or not line.startswith(ours))):  # else: a native record goes on
        chatter = False
        sys.stdout.write(line)
        sys.stdout.flush()
if aborted and not said:  # JAX's client aborted the process (exit 134): what that means, in one line
    why = (
        "process 0, which hosts the run's coordination service, is gone; what process 0 wrote before it went "
        "is kept" if joined else f"the other processes did not join within about {timeout} s; start every "
        "process with the same --coordinator and --num-processes"
    )
    sys.stdout.write(f"jaxmlp: error: process {pid} of {n}: {why} (JAX ended this process: exit 134)\n")
"""


def _tell_filter(what: str) -> None:
    """A word to the native-output filter, if one runs (``joined``, ``said``): it never reaches the user."""
    if getattr(sys.stderr, "jaxmlp_filtered", False):
        os.write(2, f"\0jaxmlp: {what}\n".encode())


def _filter_native_output(process_id, num_processes, peer_timeout) -> None:
    """Several processes: what native code writes to file descriptors 1 and 2 (gloo's "[Gloo] Rank 0 is
    connected…" on stdout, JAX's coordination-service log records on stderr) goes through a small filter
    process that drops that chatter, passes anything else on to stderr, and turns JAX's abort when
    process 0 is gone into one line. Python's own stdout and stderr (every line of jaxmlp, tracebacks)
    are copies of the original descriptors and are not filtered."""
    import subprocess

    out, err = os.dup(1), os.dup(2)
    filt = subprocess.Popen(
        [sys.executable, "-S", "-c", _NATIVE_FILTER, str(process_id), str(num_processes), f"{peer_timeout:g}"],
        stdin=subprocess.PIPE,
        stdout=err,
        stderr=err,
        close_fds=True,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    text = {"buffering": 1, "encoding": "utf-8", "errors": "backslashreplace", "closefd": False}
    sys.stdout, sys.stderr = open(out, "w", **text), open(err, "w", **text)
    sys.stderr.jaxmlp_filtered = True
    os.dup2(filt.stdin.fileno(), 1)
    os.dup2(filt.stdin.fileno(), 2)
    filt.stdin.close()  # fds 1 and 2 are the pipe's only writing ends: the filter ends when this process does


def _sweep_kept(out) -> str | None:
    """What an unfinished plain sweep in ``out`` has on disk, in words; None if nothing."""
    import jaxmlp as jm

    try:
        kept = jm.sweep.sweep_progress(out)
    except ValueError:
        kept = None
    if not kept:
        return None
    return (
        f"the results of {len(kept['done'])} of {kept['members']} members (results.csv, best_checkpoint.npz) are "
        f"in {out}"
    )


def _lost_words(args, argv):
    """What is on disk when another process of the run is gone, and how to go on (as a function: the
    answer changes while the run goes)."""

    def words() -> str:
        out = getattr(args, "out", None)
        if args.process_id not in (None, 0) and out is not None:  # its disk may not be process 0's
            return "process 0 writes the outputs: its line says what is kept and how to go on"
        if args.command == "train" and out is not None:
            if (Path(out) / "checkpoint.npz").is_file():
                return (
                    f"the checkpoint and outputs of the last finished epoch are in {out} (process 0 writes); "
                    f"resume every process, each with its own --process-id: {_resume_command(argv)}"
                )
            return (
                "no epoch of this run had finished; start every process again, each with its own --process-id: "
                f"{_again_command(argv)}"
            )
        if args.command == "sweep" and out is not None:
            kept = _sweep_kept(out)
            if kept:
                return f"{kept}; resume the rest, every process with its own --process-id: {_resume_command(argv)}"
            return (
                "no chunk of the sweep had finished; start every process again, each with its own --process-id: "
                f"{_again_command(argv)}"
            )
        return "nothing was written"

    return words


def _model_config(args, d_in: int, d_out: int, hidden=None):
    import jaxmlp as jm

    return jm.MLPConfig(
        sizes=(d_in, *(args.hidden if hidden is None else hidden), d_out),
        activation=args.activation,
        batchnorm=args.batchnorm,
        init=args.init,
        matmul_dtype=getattr(args, "matmul_dtype", "float32"),
    )


def _train_config(args, model):
    import jaxmlp as jm

    return jm.TrainConfig(
        model=model,
        optimizer=args.optimizer,
        schedule=args.schedule,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=getattr(args, "patience", 0),
        seed=args.seed,
        scan_unroll=args.scan_unroll,
        ema_schedule=args.ema_schedule,
    )


# Hyper fields the train command sets from options of the same name (given or, on resume, the checkpoint's)
_OPTIMIZER_NUMBERS = (
    "learning_rate",
    "momentum",
    "b1",
    "b2",
    "eps",
    "rho",
    "weight_decay",
    "decay_rate",
    "decay_steps",
    "warmup_steps",
    "final_lr_fraction",
)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _off_if_zero(v):
    """A rate of 0 given on the command line means the op is absent (Hyper's None), not computed at 0."""
    return None if v is None or v == 0 else v


def _hyper(args):
    import jaxmlp as jm

    h = jm.Hyper(
        dropout_rate=_off_if_zero(args.dropout),
        input_dropout_rate=_off_if_zero(args.input_dropout),
        ema_decay=_off_if_zero(getattr(args, "ema", None)),
        l2=args.l2,
        bn_momentum=args.bn_momentum,
        init_scale=args.init_scale,
        **{k: getattr(args, k) for k in _OPTIMIZER_NUMBERS if getattr(args, k, None) is not None},
    )
    jm.validate_hyper(h)
    return h


_DATA_DIR_HELP = (
    "folder with the four IDX files (default: $JAXMLP_DATA, /usr/share/datasets/<dataset>, the cache, then a "
    "SHA-256-checked download)"
)


def _axis_default(name: str, given) -> str:
    """What a sweep axis is when not given: its SWEEP_AXES value, off for an optional op, else Hyper's."""
    from jaxmlp.hyper import Hyper

    if given is not None:
        return given
    return "off" if name in SWEEP_FIELDS else f"{Hyper._field_defaults[name]:g}"


def _data_options(d, *, dev_size: bool = True) -> None:
    """--data FILE and --label-column (and --dev-size) for every command that reads data."""
    d.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="your own data instead of --dataset: a .npz (x_train, y_train[, x_test, y_test]) or a .csv with a "
        "header (the --label-column is the class, every other column a feature); the network's input and "
        "output sizes follow it (default: none)",
    )
    d.add_argument("--label-column", default="label", help="with a .csv --data: the class column's name")
    if dev_size:
        d.add_argument(
            "--dev-size",
            type=int,
            default=None,
            help="examples held out of train for selection, 0: none (default 10000; with --data a tenth)",
        )


def _load_data(args):
    """The Dataset the options name: --data FILE, else --dataset (found in --data-dir or searched)."""
    import jaxmlp as jm

    if args.data is not None:
        return jm.load_data_file(args.data, label_column=args.label_column, dev_size=args.dev_size, seed=args.seed)
    dev_size = 10_000 if args.dev_size is None else args.dev_size
    return jm.load_dataset(args.dataset, args.data_dir, dev_size=dev_size, seed=args.seed)


def _checkpoint_data(meta: dict, seed: int, args):
    """The Dataset a checkpoint was trained on, split as it was: its --data file (or the one given) or
    its named dataset; DatasetError when a file's training split is not the one the model saw."""
    import jaxmlp as jm

    name = meta.get("dataset", "fashion-mnist")
    dev_size = int(meta.get("dev_size", 10_000))
    given = getattr(args, "data", None)
    if given is None and name in jm.data.DATASETS:
        return jm.load_dataset(getattr(args, "dataset", None) or name, args.data_dir, dev_size=dev_size, seed=seed)
    path = given or name
    label_column = getattr(args, "label_column", "label")
    ds = jm.load_data_file(path, label_column=label_column, dev_size=dev_size, seed=seed)
    saved = jm.data.normalizer_from_dict(meta["normalizer"])
    if ds.normalizer != saved:
        raise jm.DatasetError(
            f"{path}: not the data this model was trained on (its training split's statistics differ)"
        )
    return ds


def build_parser() -> argparse.ArgumentParser:
    from jaxmlp._version import __version__

    parser = _Parser(prog="jaxmlp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"jaxmlp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an MLP and write metrics, curves, checkpoint, summary")
    d = t.add_argument_group("data")
    d.add_argument(
        "--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"], help="fashion-mnist | mnist"
    )
    d.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    _data_options(d)
    _network_options(t, dropout=0.3)
    o = t.add_argument_group("optimization")
    o.add_argument(
        "--optimizer", default="adam", help="sgd | momentum | nesterov | rmsprop | adam | adamw (default %(default)s)"
    )
    o.add_argument("--learning-rate", type=float, default=1e-3, help="(default %(default)g)")
    o.add_argument("--momentum", type=float, default=None, help="μ for momentum/nesterov (default 0.9)")
    o.add_argument("--b1", type=float, default=None, help="Adam β₁ (default 0.9)")
    o.add_argument("--b2", type=float, default=None, help="Adam β₂ (default 0.999)")
    o.add_argument("--eps", type=float, default=None, help="Adam/RMSprop ε (default 1e-8)")
    o.add_argument("--rho", type=float, default=None, help="RMSprop decay (default 0.9)")
    o.add_argument("--weight-decay", type=float, default=None, help="AdamW decoupled decay (default 0)")
    o.add_argument("--schedule", default="cosine", help="constant | exponential | step | cosine (default %(default)s)")
    o.add_argument("--decay-rate", type=float, default=None, help="exponential/step factor (default 0.5)")
    o.add_argument("--decay-steps", type=float, default=None, help="exponential/step period (default 1000)")
    o.add_argument("--warmup-steps", type=float, default=None, help="linear warmup steps (default 0)")
    o.add_argument("--final-lr-fraction", type=float, default=None, help="cosine floor (default 0)")
    o.add_argument(
        "--ema",
        type=float,
        default=0.999,
        metavar="DECAY",
        help="evaluate with an exponential moving average of the parameters with this decay; "
        "0: none (default %(default)g)",
    )
    _ema_schedule_option(o)
    o.add_argument("--batch-size", type=int, default=128, help="(default %(default)d)")
    o.add_argument("--epochs", type=int, default=30, help="(default %(default)d)")
    o.add_argument("--patience", type=int, default=0, help="early-stopping patience in epochs (0: off)")
    _speed_options(o)
    r = t.add_argument_group("output")
    r.add_argument("--out", default="runs/default", help="output folder (default runs/default)")
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out, with its options; options given here override its numbers "
        "(learning rate, epochs, …) — its structure cannot change",
    )
    r.add_argument("--overwrite", action="store_true", help="replace the run saved in --out (default: refuse)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument(
        "--data-parallel",
        action="store_true",
        help="shard each batch over all devices, of every process (batch size a multiple of the device count)",
    )
    _process_options(r)

    e = sub.add_parser("evaluate", help="accuracy of a saved model")
    e.add_argument("checkpoint", help="a run folder, its checkpoint.npz or summary.json, or a sweep's folder")
    e.add_argument(
        "--dataset", default=None, choices=["fashion-mnist", "mnist"], help="default: the dataset it was trained on"
    )
    e.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    _data_options(e, dev_size=False)
    e.add_argument("--split", default="test", choices=["test", "dev", "train"], help="test | dev | train")

    w = sub.add_parser("sweep", help="train many settings as one compiled vmapped program")
    d = w.add_argument_group("data")
    d.add_argument(
        "--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"], help="fashion-mnist | mnist"
    )
    d.add_argument("--data-dir", default=None, help=_DATA_DIR_HELP)
    _data_options(d)
    a = w.add_argument_group(
        "axes: each takes one value, a list 0,1e-4,1e-3, or a range 1e-4:1e-1:log:8 (log-spaced) / 0:0.5:lin:6"
    )
    a.add_argument(
        "--hidden",
        default="100",
        help="hidden widths; alternatives separated by '/', e.g. 64/128/256 or 64,64/128,128 (default 100)",
    )
    for name, default in SWEEP_AXES.items():
        field = SWEEP_FIELDS.get(name, name)
        a.add_argument(
            f"--{name.replace('_', '-')}",
            default=default,
            dest=name,
            metavar="VALUES",
            help=f"Hyper.{field} (default {_axis_default(name, default)})",
        )
    w.add_argument("--seeds", type=int, default=1, help="seeds per setting (default 1)")
    w.add_argument(
        "--random",
        type=int,
        default=None,
        metavar="N",
        help="draw N random points within each axis' range instead of the grid (default: the grid)",
    )
    w.add_argument(
        "--per-member-shuffle",
        action="store_true",
        help="each member shuffles the data with its own key (default: one shared order)",
    )
    w.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="members per compiled program, 1: each member alone as a single run (default: --layout-probe "
        "decides, within memory)",
    )
    w.add_argument(
        "--layout-probe",
        choices=("auto", "always", "never"),
        default="auto",
        help="without --chunk-size: time the candidate layouts (always), take the cost model's pick (never), or "
        "reuse what this machine measured for this network before and time them only where that costs at most "
        "10%% of the sweep (default auto)",
    )
    s_ = w.add_argument_group("search over the members (default: every member trains every epoch)")
    s_.add_argument(
        "--halving",
        type=int,
        default=None,
        metavar="ETA",
        help="successive halving: after epochs E/ETA^k (k = …, 2, 1) only the best 1/ETA of the members by dev "
        "accuracy go on (e.g. --epochs 9 --halving 3: rungs after 1, 3 and 9 epochs) (default: off)",
    )
    s_.add_argument(
        "--pbt",
        type=int,
        default=None,
        metavar="INTERVAL",
        help="population-based training: every INTERVAL epochs the bottom quarter by dev accuracy copies a "
        "top-quarter member (state and hyperparameters) and multiplies the swept ones by 0.8 or 1.2 (default: off)",
    )
    w.add_argument("--activation", default="relu", help="relu | tanh | sigmoid (default relu)")
    w.add_argument("--batchnorm", action="store_true", help="batch normalization before activations")
    w.add_argument("--init", default="he", help="he | xavier | seed (default he)")
    w.add_argument(
        "--optimizer", default="adam", help="sgd | momentum | nesterov | rmsprop | adam | adamw (default adam)"
    )
    w.add_argument("--schedule", default="constant", help="constant | exponential | step | cosine (default constant)")
    w.add_argument("--batch-size", type=int, default=128, help="(default 128)")
    _ema_schedule_option(w)
    _speed_options(w)
    w.add_argument("--epochs", type=int, default=5, help="(default 5)")
    w.add_argument("--seed", type=int, default=0, help="data split and shared data order (default 0)")
    _process_options(w)
    w.add_argument("--out", default="runs/sweep", help="output folder (default runs/sweep)")
    w.add_argument(
        "--resume",
        action="store_true",
        help="continue the plain sweep in --out that was interrupted or lost a process, with the same options: "
        "its finished chunks are kept, the rest trained",
    )
    w.add_argument("--overwrite", action="store_true", help="replace the sweep saved in --out (default: refuse)")
    w.add_argument("--no-progress", action="store_true", help="no progress bar (none is drawn into a non-terminal)")

    g = sub.add_parser("gradcheck", help="hand-derived gradients vs jax.grad and finite differences")
    _network_options(g)
    g.add_argument("--input-dim", type=int, default=784, help="features of the random network's input")
    g.add_argument("--classes", type=int, default=10, help="classes of its output")
    g.add_argument("--batch-size", type=int, default=16, help="examples in the checked batch")
    g.add_argument("--fd-samples", type=int, default=64, help="coordinates per array for finite differences")
    g.add_argument("--float32", action="store_true", help="check in float32 (no finite differences)")
    g.add_argument(
        "--checkpoint",
        default=None,
        help="check at a trained model's parameters (a run folder or its checkpoint) on a batch of its "
        "training data, instead of a random network on random data; the network options are then the "
        "checkpoint's (default: a random network)",
    )
    g.add_argument(
        "--data-dir",
        default=None,
        help="with --checkpoint: the folder of its dataset's IDX files (default: found as train finds it)",
    )
    g.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _given(argv) -> set:
    """The options given on the command line ``argv`` (their dests), as opposed to defaults."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for sub in subparsers.choices.values():
        for action in sub._actions:
            action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


# train options a resumed run takes from its checkpoint unless given: name -> (config, hyper, meta) -> value
_FROM_CHECKPOINT = {
    "dataset": lambda tc, h, meta: meta.get("dataset"),
    "dev_size": lambda tc, h, meta: meta.get("dev_size"),
    "hidden": lambda tc, h, meta: tc.model.sizes[1:-1],
    "activation": lambda tc, h, meta: tc.model.activation,
    "batchnorm": lambda tc, h, meta: tc.model.batchnorm,
    "init": lambda tc, h, meta: tc.model.init,
    "matmul_dtype": lambda tc, h, meta: tc.model.matmul_dtype,
    "optimizer": lambda tc, h, meta: tc.optimizer,
    "schedule": lambda tc, h, meta: tc.schedule,
    "batch_size": lambda tc, h, meta: tc.batch_size,
    "epochs": lambda tc, h, meta: tc.epochs,
    "patience": lambda tc, h, meta: tc.patience,
    "seed": lambda tc, h, meta: tc.seed,
    "scan_unroll": lambda tc, h, meta: tc.scan_unroll,
    "ema_schedule": lambda tc, h, meta: tc.ema_schedule,
    "dropout": lambda tc, h, meta: h.dropout_rate or 0.0,
    "input_dropout": lambda tc, h, meta: h.input_dropout_rate or 0.0,
    "ema": lambda tc, h, meta: h.ema_decay or 0.0,
    **{
        name: (lambda tc, h, meta, name=name: getattr(h, name))
        for name in (*_OPTIMIZER_NUMBERS, "l2", "bn_momentum", "init_scale")
    },
}


def _resume_options(args, given: set) -> None:
    """For ``--resume``: every option not given on the command line takes the checkpoint's value, so
    ``jaxmlp train --out DIR --resume --epochs 40`` continues the run as it was, with 40 epochs."""
    import jaxmlp as jm

    path = Path(args.out) / "checkpoint.npz"
    if not path.is_file():
        raise jm.CheckpointError(f"--resume: no checkpoint at {path}")
    tc, hyper, _, _, _, meta = jm.load_model(path)
    for name, value_of in _FROM_CHECKPOINT.items():
        value = value_of(tc, hyper, meta)
        if name not in given and value is not None:
            setattr(args, name, value)
    if args.dataset not in jm.data.DATASETS:  # trained on a --data file: the dataset's name is its path
        if "data" not in given:
            args.data = args.dataset
        args.dataset = "fashion-mnist"


def cmd_train(args, given=frozenset()) -> int:
    import jaxmlp as jm
    from jaxmlp.run import OutputFolder, check_resume

    say = _join_processes(args, enabled=args.data_parallel)
    # process 0 (the one that writes) checks the folder, before the data is loaded
    _checked_by_process_0(lambda: OutputFolder.check_free(args.out, resume=args.resume, overwrite=args.overwrite))
    if args.resume:
        _resume_options(args, given)
    hyper = _hyper(args)
    ds = _load_data(args)
    tc = _train_config(args, _model_config(args, ds.x_train.shape[1], ds.num_classes))
    if args.resume:  # a refusal comes before the run's description, not after it
        check_resume(args.out, ds, tc, hyper)
    say(
        f"{ds.name}: {ds.x_train.shape[0]} train / {ds.x_dev.shape[0]} dev / {ds.x_test.shape[0]} test; "
        f"network {'-'.join(map(str, tc.model.sizes))}"
        f"{' ' + tc.model.activation if tc.model.num_hidden else ' (softmax regression)'}, {tc.optimizer} "
        f"lr {args.learning_rate:g}, batch {tc.batch_size}, {_count(tc.epochs, 'epoch')} → {args.out}"
    )
    result = jm.fit(
        ds,
        tc,
        hyper,
        out_dir=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress and say is print,
        log=say,
        data_parallel=args.data_parallel,
        stop=args.signals.stop if hasattr(args, "signals") else None,
    )
    s = result.summary
    say(
        f"{s['examples_per_second']:.0f} training examples/s (compile {s['compile_seconds']:.1f}s excluded); "
        f"wrote {args.out}/summary.json"
    )
    return 0


def _checkpoint_of(text: str) -> Path:
    """The checkpoint a path means: a run folder (its checkpoint.npz, or a sweep's best_checkpoint.npz),
    a file inside such a folder (summary.json, metrics.csv, …), or a checkpoint file itself."""
    import jaxmlp as jm

    path = Path(text)
    if path.suffix == ".npz" or not (path.is_dir() or path.is_file()):
        return path  # load_model says what is wrong with it
    folder = path if path.is_dir() else path.parent
    for name in ("checkpoint.npz", "best_checkpoint.npz"):
        if (folder / name).is_file():
            return folder / name
    raise jm.CheckpointError(f"{text}: no checkpoint.npz (a run's) or best_checkpoint.npz (a sweep's) in {folder}")


def cmd_evaluate(args) -> int:
    import jaxmlp as jm

    tc, _, params, bn_state, norm, meta = jm.load_model(_checkpoint_of(args.checkpoint))
    name = args.dataset or meta.get("dataset", "fashion-mnist")
    if args.data is not None or name not in jm.data.DATASETS:  # a --data file, split as in training
        ds = _checkpoint_data(meta, tc.seed, args)
        name, (x, labels) = (
            ds.name,
            {"test": (ds.x_test, ds.y_test), "dev": (ds.x_dev, ds.y_dev)}.get(args.split, (ds.x_train, ds.y_train)),
        )
    else:
        files = jm.data.find_files(name, args.data_dir)
        if args.split == "test":
            images, labels = jm.data.read_pair(files["test_images"], files["test_labels"])
        else:
            images, labels = jm.data.read_pair(files["train_images"], files["train_labels"])
            dev_size = int(meta.get("dev_size", 10_000))
            xtr, ytr, xdev, ydev = jm.data.split_train_dev(images, labels, dev_size, tc.seed)
            images, labels = (xdev, ydev) if args.split == "dev" else (xtr, ytr)
        x = norm(images)
    if x.shape[1] != tc.model.sizes[0]:
        raise ValueError(f"{args.checkpoint} expects {tc.model.sizes[0]} features, data has {x.shape[1]}")
    acc, loss = jm.evaluate(params, bn_state, x, labels, config=tc.model)
    print(f"{name} {args.split}: accuracy {acc:.4f}  loss {loss:.4f}  ({len(labels)} examples)")
    return 0


# option name -> default; each a Hyper field (``SWEEP_FIELDS`` where the names differ)
SWEEP_AXES = {
    "learning_rate": "1e-3",
    "l2": "0",
    "dropout": None,
    "input_dropout": None,
    "ema": None,
    "momentum": None,
    "b1": None,
    "b2": None,
    "eps": None,
    "rho": None,
    "weight_decay": None,
    "bn_momentum": None,
    "init_scale": None,
}
SWEEP_FIELDS = {"dropout": "dropout_rate", "input_dropout": "input_dropout_rate", "ema": "ema_decay"}


def _checked_by_process_0(check) -> None:
    """``check()`` on process 0 (it raises ValueError or OSError saying what is wrong), its outcome
    shared with the other processes of the run: a refusal stops every process with one line, instead
    of leaving the others to find process 0's coordination service gone (JAX then aborts them)."""
    import jax

    import jaxmlp as jm

    error = None
    if jax.process_index() == 0:
        try:
            check()
        except (ValueError, OSError) as e:
            error = e
    refused = jm.parallel.agree(int(error is not None))
    if refused:
        jm.parallel.finish()  # together, process 0 last: no process outlives the coordinator it needs
    if refused and error is None:
        raise ValueError(f"process {jax.process_index()}: process 0 refused to start the run (its line says why)")
    if error is not None:
        raise error


def cmd_sweep(args) -> int:
    import jaxmlp as jm
    from jaxmlp.run import OutputFolder

    axes = {}
    for name in SWEEP_AXES:
        text = getattr(args, name)
        if text is not None:
            axes[SWEEP_FIELDS.get(name, name)] = jm.parse_axis(text)
    try:
        hidden = [_hidden(h) for h in args.hidden.split("/")]
    except argparse.ArgumentTypeError as e:
        raise ValueError(str(e)) from None
    swept = [n for n, v in axes.items() if len(v) > 1]
    fixed = {n: v[0] for n, v in axes.items() if len(v) == 1}
    fixed.update({n: _off_if_zero(fixed[n]) for n in SWEEP_FIELDS.values() if n in fixed})
    base = jm.Hyper()._replace(**fixed)
    if args.random is not None and args.random < 1:
        raise ValueError(f"--random takes a number of points ≥ 1, got {args.random}")
    if args.random:
        log_axes = [n for n in swept if min(axes[n]) > 0 and max(axes[n]) / min(axes[n]) >= 10]
        members = jm.random_sample(
            base,
            {n: axes[n] for n in swept},
            args.random,
            seeds=args.seeds,
            hidden=hidden,
            seed=args.seed,
            log_axes=log_axes,
        )
    else:
        members = jm.grid(base, {n: axes[n] for n in swept}, seeds=args.seeds, hidden=hidden)
    jm.search.check(len(members), args.epochs, args.halving, args.pbt, swept)  # nothing above touches JAX
    if args.resume and (args.halving or args.pbt):
        raise ValueError("--resume continues a plain sweep; a search (--halving, --pbt) keeps nothing until it ends")
    say = _join_processes(args)

    def free():
        OutputFolder.check_free(args.out, resume=args.resume, overwrite=args.overwrite)
        if args.resume and jm.sweep.sweep_progress(args.out) is None:
            raise ValueError(f"{args.out} holds no unfinished sweep to resume: it finished, or none started there")

    _checked_by_process_0(free)
    ds = _load_data(args)
    tc = _train_config(args, _model_config(args, ds.x_train.shape[1], ds.num_classes, hidden=hidden[0]))
    say(
        f"{ds.name}: {_count(len(members), 'member')} ({', '.join(swept) or 'no axes'}"
        f"{', hidden' if len(hidden) > 1 else ''} × {_count(args.seeds, 'seed')}), {_count(tc.epochs, 'epoch')} "
        f"→ {args.out}"
    )
    res = jm.run_sweep(
        ds,
        tc,
        members,
        chunk_size=args.chunk_size,
        shared_order=not args.per_member_shuffle,
        halving=args.halving,
        pbt=args.pbt,
        overwrite=args.overwrite,
        resume=args.resume,
        probe={"auto": None, "always": True, "never": False}[args.layout_probe],
        progress=not args.no_progress and say is print,
        data_seed=args.seed,
        axes=swept,
        out_dir=args.out,
        log=say,
    )
    s, b = res.summary, res.summary["best"]
    if b is not None:
        # with PBT, the values the member ended with (those its checkpoint holds)
        which = [f"{n}={b.get('final_' + n, b[n]):g}" for n in swept]
        which += [f"hidden={b.get('final_hidden', b['hidden'])}"] if len(hidden) > 1 else []
        say(
            f"best member {b['member']}: dev {b['dev_accuracy']:.4f}, test {b['test_accuracy']:.4f}"
            + (f" ({', '.join(which)})" if which else "")
        )
    if args.halving or args.pbt:
        say(f"{s['member_epochs']} member-epochs trained (a grid trains {s['members'] * s['epochs']})")
    say(
        f"{s['diverged']} diverged; {s['examples_per_second']:.0f} examples/s over all members "
        f"(compile {s['compile_seconds']:.1f}s excluded); wrote {args.out}/results.csv"
    )
    return 0


def cmd_gradcheck(args) -> int:
    import jax

    if args.batch_size < 1 or args.fd_samples < 1:
        raise ValueError(f"--batch-size and --fd-samples must be ≥ 1, got {args.batch_size} and {args.fd_samples}")
    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    import jaxmlp as jm

    if args.checkpoint:  # a trained model on real data: saturated units, γ ≠ 1, small gradients
        model = jm.load_model(_checkpoint_of(args.checkpoint))
        config, hyper = model.config.model, model.hyper
        ds = _checkpoint_data(model.meta, model.config.seed, args)
        batch = (ds.x_train[: args.batch_size], ds.y_train[: args.batch_size])
        where = f"the parameters of {args.checkpoint}, {args.batch_size} training examples of {ds.name}"
        extra = dict(params=model.params, state=model.bn_state, batch=batch)
    else:
        config = _model_config(args, args.input_dim, args.classes)
        hyper = _hyper(argparse.Namespace(**{**vars(args), "learning_rate": 1.0}))
        where, extra = f"a random initialization, a random batch of {args.batch_size}", {}
    from jaxmlp import memory

    dtype = "float32" if args.float32 else "float64"
    memory.check(  # before anything is allocated: a network that cannot fit is refused, not swapped to death
        memory.gradcheck_bytes(config, args.batch_size, dtype),
        memory.available_bytes(),
        f"checking the gradients of {'-'.join(map(str, config.sizes))} in {dtype}",
        "use narrower or fewer --hidden layers",
    )
    report = jm.check_gradients(
        config,
        hyper,
        key=jax.random.PRNGKey(args.seed),
        batch_size=args.batch_size,
        dtype=dtype,
        fd_samples=None if args.float32 else args.fd_samples,
        **extra,
    )
    if args.json:
        print(json.dumps({**report.to_dict(), "at": where}, indent=2))
        return 0 if report.ok else EXIT_GRADCHECK
    dropout = "off" if hyper.dropout_rate is None else f"{float(hyper.dropout_rate):g}"
    print(
        f"network {'-'.join(map(str, config.sizes))} {config.activation}, dropout {dropout}, "
        f"batchnorm {'on' if config.batchnorm else 'off'}, l2 {float(hyper.l2):g}, init {config.init}; "
        f"{report.dtype}; at {where}"
    )
    print(f"{'array':<14}{'shape':<14}{'vs jax.grad':>14}{'vs finite diff':>16}")
    for r in report.arrays:
        fd = r.get("rel_diff_vs_finite_differences")
        print(
            f"{r['name']:<14}{'x'.join(map(str, r['shape'])):<14}{r['rel_error_vs_autodiff']:>14.2e}"
            f"{'' if fd is None else format(fd, '.2e'):>16}"
        )
    fd = report.max_rel_diff_vs_finite_differences
    print(
        f"max: {report.max_rel_error_vs_autodiff:.2e} vs jax.grad (tolerance {report.autodiff_tol:g})"
        + (
            "; finite differences skipped (float32 cannot resolve them: run without --float32)"
            if fd is None
            else f", {fd:.2e} vs finite differences (tolerance {report.fd_tol:g})"
        )
        + ("  OK" if report.ok else "  FAILED")
    )
    return 0 if report.ok else EXIT_GRADCHECK


def _program() -> str:
    """How the user started this command: its path when it was a ``jaxmlp`` script (``.venv/bin/jaxmlp``
    is not on everyone's PATH), else ``jaxmlp``."""
    return sys.argv[0] if Path(sys.argv[0]).name == "jaxmlp" else "jaxmlp"


def _again_command(argv) -> str:
    """The command that starts the run of ``argv`` anew (without ``--resume``)."""
    return shlex.join([_program(), *(a for a in argv if a != "--resume")])


def _resume_command(argv) -> str:
    """The command that continues an interrupted ``jaxmlp train …``: the same options plus --resume."""
    args = [a for a in argv if a != "--overwrite"]
    return shlex.join([_program(), *(args if "--resume" in args else [*args, "--resume"])])


def _out_of_memory(e: Exception) -> bool:
    return isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e)


def _parse(argv):
    """Parse ``argv``; an unknown option is reported by the command's own parser (its --help)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    args.signals, args.argv = _Signals(), argv
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, args.signals.handler)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT stays ignored
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, args.signals.handler)
    unwatch = args.signals.watch(_last_words(args, argv))
    try:
        return _run(args, argv)
    except KeyboardInterrupt as e:  # before the library was even imported
        name = getattr(e, "signal_name", "SIGINT")
        print(f"jaxmlp: {name}: interrupted", file=sys.stderr)
        return EXIT_SIGNAL[name]
    finally:
        unwatch()
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run(args, argv) -> int:
    import jax

    import jaxmlp as jm
    from jaxmlp import CheckpointError, DatasetError, RunInterrupted, SweepInterrupted, TrainingDiverged

    try:
        if args.command == "train":
            code = cmd_train(args, _given(argv))
        else:
            code = {"evaluate": cmd_evaluate, "gradcheck": cmd_gradcheck, "sweep": cmd_sweep}[args.command](args)
        if code == 0:  # several processes: leave together (process 0, hosting the service, last)
            jm.parallel.finish(getattr(args, "peer_timeout", None) or jm.parallel.PEER_TIMEOUT)
        return code
    except TrainingDiverged as e:
        print(f"jaxmlp: error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except RunInterrupted as e:
        if e.resumable:
            print(
                f"jaxmlp: {e.signal_name}: stopped after {e.epochs_done} of {e.epochs} epochs; the checkpoint and "
                f"the outputs of the finished epochs are in {e.out_dir}; resume with: {_resume_command(argv)}",
                file=sys.stderr,
            )
        else:
            print(
                f"jaxmlp: {e.signal_name}: stopped before the first epoch finished; nothing of this run was "
                f"written; start it again with: {_again_command(argv)}",
                file=sys.stderr,
            )
        return EXIT_SIGNAL[e.signal_name]
    except SweepInterrupted as e:
        if e.resumable:
            print(
                f"jaxmlp: {e.signal_name}: stopped after {e.members_done} of {e.members} members; their results "
                f"(results.csv, best_checkpoint.npz) are in {e.out_dir}; resume the rest with: {_resume_command(argv)}",
                file=sys.stderr,
            )
        else:
            why = "a search keeps nothing until it ends" if e.search else "no chunk of members had finished"
            print(
                f"jaxmlp: {e.signal_name}: stopped before the sweep's end ({why}); nothing of this sweep was written; "
                f"start it again with: {_again_command(argv)}",
                file=sys.stderr,
            )
        return EXIT_SIGNAL[e.signal_name]
    except (DatasetError, CheckpointError, ValueError, OSError, RuntimeError, MemoryError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if jm.parallel.lost_contact(e) and not _out_of_memory(e):
            if not jm.parallel.claim_ending():  # the watcher is saying it and ends the process
                import threading

                threading.Event().wait()
            jm.parallel.stop_watching()  # this line is the one ending said
            _tell_filter("said")
            print(
                f"jaxmlp: error: process {jax.process_index()} of {jax.process_count()}: another process of this "
                f"run is gone ({first}); {_lost_words(args, argv)()}",
                file=sys.stderr,
            )
            return EXIT_LOST_PROCESS
        if isinstance(e, (DatasetError, CheckpointError, ValueError, OSError)):
            print(f"jaxmlp: error: {e}", file=sys.stderr)
            return EXIT_ERROR
        if not _out_of_memory(e):
            raise
        print(
            f"jaxmlp: error: out of memory ({first}); use narrower --hidden layers, a smaller --batch-size or, "
            "for sweeps, a smaller --chunk-size",
            file=sys.stderr,
        )
        return EXIT_ERROR


def console() -> None:
    """The installed ``jaxmlp`` command. After an interrupt it leaves at once (``os._exit``, once the
    output is flushed): XLA's threads may still be compiling, and a normal interpreter shutdown under
    them can crash. Everything the run keeps is on disk by then. A process of a multi-process run that
    fails leaves at once too: ``jax.distributed``'s shutdown at exit would wait for the others (which
    then see it gone and stop with one line of their own)."""
    code = main()
    _tell_filter("said")  # whatever the ending, this process has said it
    several = "jax" in sys.modules and sys.modules["jax"].distributed.is_initialized()
    if code in EXIT_SIGNAL.values() or (code != 0 and several):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
