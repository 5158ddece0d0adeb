"""Meshes and shardings over several devices with JAX's own sharding (no home-made scheduler).

Contract::

    m = mesh("data")                                    # 1-D Mesh over all devices
    epoch = data_parallel_epoch(tc, m)                  # jitted; epoch(ts, hyper, x, y) -> (ts, metrics)
    ts, metrics = epoch(ts, hyper, x_train, y_train)
    sharded, replicated = member_shardings(n_devices)   # sweeps: (None, None) on one device

Data parallelism: parameters, optimizer state and data are replicated (``NamedSharding(mesh, P())``);
each epoch's batch-index array is sharded along its batch axis (``P(None, "data")``), so each device
gathers and processes its slice of every batch. XLA's SPMD partitioner then inserts the all-reduces
that sum the weight gradients (and the batch-norm statistics) over devices, so the result is the
single-device epoch's, up to float summation order. The epoch draws its permutation exactly as
``train_epoch`` does. The batch size must be a multiple of the number of devices.

Sweeps shard the member axis (``P("members")``) and replicate the data.

Several processes (hosts): ``initialize`` joins them through ``jax.distributed`` (JAX's own
coordination service; on CPU the cross-process collectives are gloo). ``jax.devices()`` then lists
every process's devices, the meshes above span them all, and the same programs run unchanged: every
process runs the same code on the same data (each loads it itself), XLA's collectives exchange what the
shardings say. ``to_host`` gathers member-sharded results onto every process; only process 0 writes
files (``jaxmlp.run`` / ``jaxmlp.sweep``).

Endings. The processes join in JAX's recoverable mode (``jax_enable_recoverability``), so that a process
that is gone no longer makes JAX abort the others (its default: a C++ fatal error, exit 134). A death
shows at the survivors' next collective (gloo: "Connection closed by peer", a ``JaxRuntimeError`` that
``lost_contact`` recognizes). A peer that hangs, or dies while the others wait outside a collective, is
found by a watcher thread that asks the coordination service which processes are alive
(``get_live_nodes``, the call under ``multihost_utils.live_devices``): a process without a heartbeat
for ``heartbeat_seconds(peer_timeout)`` seconds is not, and the watcher calls ``on_lost`` with one
line. Joining is bounded the same way: processes that do not all join within ``peer_timeout`` seconds
call ``on_lost``. ``finish``
ends the run together: each process says it is done (a key in the service's store, so that no one takes
a finished peer for a lost one), process 0 (which hosts the service) waits for the others' word before it
leaves. One case stays JAX's own: when process 0 itself dies, the others' JAX client aborts them at once
(exit 134); ``jaxmlp.cli`` turns its log into one line.
"""

import json
import math
import os
import sys
import threading
import time
from functools import partial

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmlp import compiler, step
from jaxmlp.mlp import loss_and_grads

PEER_TIMEOUT = 30  # seconds: a process without a heartbeat this long is gone; also the bound on joining
EXIT_LOST = 4  # the exit code of a process that left because another process of its run is gone
_FINISHED = "jaxmlp/finished/"  # + process id: the key a process sets when its part of the run is done


def leave(message: str) -> None:
    """The default ``on_lost``: the ``when_leaving`` writes, ``message`` as one line on stderr, then exit
    ``EXIT_LOST`` at once (the main thread may be blocked in a collective that will never complete)."""
    for last in list(_watch.last_writes):
        try:
            last()
        except Exception:  # the ending is said whatever a last write met
            pass
    pid, n = _watch.who  # not jax.process_index(): while joining, asking JAX would start its backend
    sys.stderr.write(f"jaxmlp: error: process {pid} of {n}: {message}\n")
    sys.stderr.flush()
    os._exit(EXIT_LOST)


class _Watch:
    """The state of this process's run of several processes: the watcher thread and how it ends."""

    def __init__(self):
        self.done = threading.Event()  # set by finish: the thread stops, peers that leave are not lost
        self.thread = None
        self.said = threading.Lock()  # one ending is reported, by whichever thread gets there first
        self.who = (0, 1)  # (process id, number of processes), known before JAX's backend is
        self.last_writes = []  # when_leaving's functions
        self.owner = None  # the thread that says the ending

    def claim(self) -> bool:
        """Whether this thread may say the ending: the first to ask (again True for it), never a second."""
        me = threading.get_ident()
        if self.owner == me:
            return True
        if self.said.acquire(blocking=False):
            self.owner = me
            return True
        return False

    def lost(self, on_lost, message):
        if not self.done.is_set() and self.claim():
            on_lost(message)


_watch = _Watch()


def _client():
    from jax._src import distributed  # the client JAX's own live_devices uses (multihost_utils)

    return distributed.global_state.client


def _finished(client, pid: int) -> bool:
    try:
        return client.key_value_try_get(f"{_FINISHED}{pid}") is not None
    except Exception:  # NOT_FOUND
        return False


def heartbeat_seconds(peer_timeout: float) -> int:
    """JAX's heartbeat timeout for ``peer_timeout``: a little longer, so that a join that does not
    happen is said by ``initialize``'s timer before JAX's own abort (the heartbeat of a process that
    never registered times out too)."""
    return int(math.ceil(peer_timeout)) + 5


def _watch_peers(n: int, heartbeat: int, on_lost) -> None:
    """Loop of the watcher thread: every second, the processes the coordination service still counts
    alive (a call every live process's watcher makes, so it also waits for a peer that hangs, until
    its heartbeat is ``heartbeat`` seconds late)."""
    client = _client()
    everyone = list(range(n))
    while not _watch.done.is_set():
        try:
            alive = client.get_live_nodes(everyone)
        except Exception as e:  # the service is gone: process 0 died (JAX's client usually aborts first)
            _watch.lost(on_lost, f"the run's coordination service (process 0) is gone ({str(e).splitlines()[0]})")
            return
        gone = [p for p in everyone if p not in alive and not _finished(client, p)]
        if gone and not _watch.done.is_set():
            names = ", ".join(map(str, gone))
            _watch.lost(
                on_lost,
                f"process {names} stopped answering (no heartbeat for {heartbeat} s); stopping",
            )
            return
        _watch.done.wait(1.0)


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    peer_timeout: float = PEER_TIMEOUT,
    on_lost=None,
) -> int:
    """Join the processes of one run with ``jax.distributed.initialize``, before anything else touches
    JAX; returns the number of processes. With ``coordinator`` ("HOST:PORT" of process 0, reachable by
    all), ``num_processes`` and ``process_id`` as given; without them, JAX's own cluster
    auto-detection (SLURM, Open MPI, Kubernetes, Cloud TPU, …) when it finds a cluster, and one
    process (nothing initialized) when it does not. ValueError (one line) for a wrong combination.

    ``peer_timeout`` (seconds) bounds every wait on another process: joining, and a peer gone or hung
    (see the module contract); then ``on_lost(message)`` is called from a watcher thread, once
    (default ``leave``: the line on stderr, exit ``EXIT_LOST``). End the run with ``finish()``."""
    check_processes(coordinator, num_processes, process_id, peer_timeout)
    if jax.distributed.is_initialized():  # joined already (a second command in this Python process)
        return jax.process_count()
    on_lost = leave if on_lost is None else on_lost
    heartbeat = heartbeat_seconds(peer_timeout)
    timeouts = {
        "heartbeat_timeout_seconds": heartbeat,
        "shutdown_timeout_seconds": heartbeat,
        "initialization_timeout": int(peer_timeout) + 60,  # JAX aborts then; the timer below speaks first
    }
    try:  # JAX's fault-tolerant mode: a lost process does not abort the others
        jax.config.update("jax_enable_recoverability", True)
    except AttributeError:  # a JAX without it: the others abort as before
        pass
    joined = threading.Event()

    def join_timer():
        if not joined.wait(peer_timeout):
            _watch.lost(
                on_lost,
                f"the other processes did not join within {peer_timeout:g} s (at {coordinator or 'the cluster'}); "
                "start every process with the same coordinator and process count",
            )

    if coordinator is None:
        try:
            jax.distributed.initialize(**timeouts)
        except ValueError:  # "coordinator_address should be defined": no cluster found, one process
            return 1
        except RuntimeError:  # JAX already started in this process (a library caller): it stays one process
            return jax.process_count()
    else:
        _watch.__init__()  # a fresh watch for this join (a script may join, finish and join again)
        _watch.who = (process_id, num_processes)
        threading.Thread(target=join_timer, daemon=True, name="jaxmlp-join").start()
        try:
            jax.distributed.initialize(coordinator, num_processes, process_id, **timeouts)
        except RuntimeError as e:
            raise ValueError(f"cannot join the processes of the run: {str(e).splitlines()[0]}") from None
        finally:
            joined.set()
    joined.set()
    # the backend starts lazily, so this still applies: CPU devices of several processes talk through gloo
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    n = jax.process_count()
    _watch.who = (jax.process_index(), n)
    if n > 1:
        _watch.thread = threading.Thread(
            target=_watch_peers, args=(n, heartbeat, on_lost), daemon=True, name="jaxmlp-peers"
        )
        _watch.thread.start()
    return n


def when_leaving(write):
    """Have ``leave`` call ``write()`` (from the watcher thread, while the main thread may be stuck in a
    collective) before the process exits: a run's last files (``fit``: status "process lost", curves).
    Returns the function that takes it back."""
    _watch.last_writes.append(write)
    return lambda: _watch.last_writes.remove(write) if write in _watch.last_writes else None


def check_processes(coordinator=None, num_processes=None, process_id=None, peer_timeout=PEER_TIMEOUT) -> None:
    """``initialize``'s checks of its arguments, on their own (nothing is started): ValueError, one line."""
    given = (coordinator, num_processes, process_id)
    if any(v is not None for v in given) and any(v is None for v in given):
        raise ValueError("coordinator, num_processes and process_id go together: give all three, or none")
    if not 0 < peer_timeout < math.inf:
        raise ValueError(f"peer_timeout must be a number of seconds > 0, got {peer_timeout:g}")
    if coordinator is None:
        return
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator takes HOST:PORT (process 0's address), got {coordinator!r}")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id must lie in [0, num_processes) and num_processes be ≥ 1, got {process_id} and {num_processes}"
        )


def claim_ending() -> bool:
    """Whether the calling thread is the one to say how the run ended (write the last files, print the
    line): False when the watcher thread says it already (it is leaving: the process ends within moments)."""
    return _watch.claim()


def stop_watching() -> None:
    """Quiet the watcher: this process has found the loss itself (a failed collective) and says so."""
    _watch.done.set()


def finish(peer_timeout: float = PEER_TIMEOUT) -> None:
    """End this process's part of a run of several processes (nothing on one): say so in the service's
    store, stop the watcher, and on process 0 wait (at most ``peer_timeout`` seconds) for every other
    process's word and then for it to disconnect, before the service it hosts goes (a client still
    connected when it goes is aborted by JAX); then ``jax.distributed.shutdown``. After it, a peer that
    leaves is not lost."""
    if not jax.distributed.is_initialized():
        return
    client, pid, n = _client(), jax.process_index(), jax.process_count()
    client.key_value_set(f"{_FINISHED}{pid}", "1")
    _watch.done.set()
    deadline = time.monotonic() + peer_timeout
    if pid == 0:
        for p in range(1, n):
            while not _finished(client, p) and time.monotonic() < deadline:
                time.sleep(0.05)
    if _watch.thread is not None:
        _watch.thread.join(timeout=peer_timeout)  # out of get_live_nodes before the client shuts down
    if pid == 0:  # the service goes with process 0: a peer still connected then is aborted by its JAX client
        others = list(range(1, n))
        while others and time.monotonic() < deadline:
            try:
                others = [p for p in others if p in client.get_live_nodes(list(range(n)))]
            except Exception:  # the service cannot tell: nothing more to wait for
                break
            time.sleep(0.05)
    jax.distributed.shutdown()


LOST_SIGNS = ("gloo", "connection", "unavailable", "heartbeat", "socket closed")  # in the runtime's message


def lost_contact(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process of the run is gone: a
    runtime error of a multi-process run whose message speaks of the transport (gloo's "Connection
    closed by peer", the coordinator's "UNAVAILABLE", …)."""
    kinds = (jax.errors.JaxRuntimeError, ValueError, RuntimeError)  # gloo's failures surface as either
    if not (isinstance(error, kinds) and jax.distributed.is_initialized() and jax.process_count() > 1):
        return False
    text = str(error).lower()
    return any(sign in text for sign in LOST_SIGNS)


def global_put(tree, sharding):
    """``tree`` (the same values on every process) placed with ``sharding``, which may span the devices
    of every process: each process hands over the shards its own devices hold."""
    if sharding is None:
        return tree
    return jax.device_put(jax.tree_util.tree_map(np.asarray, tree), sharding)


def mesh(axis: str, devices=None) -> Mesh:
    """A 1-D mesh named ``axis`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.array(devices), (axis,))


def data_parallel_epoch(tc: step.TrainConfig, data_mesh: Mesh):
    """``train_epoch`` for ``tc`` with each batch sharded over ``data_mesh``'s one axis (see the module
    contract), jitted with the state donated: ``epoch(ts, hyper, x, y) -> (ts, metrics)``. ValueError
    when the batch size is not a multiple of the mesh's size."""
    n = data_mesh.size
    if tc.batch_size % n:
        raise ValueError(f"batch size {tc.batch_size} must be a multiple of the {n} devices for data parallelism")
    replicated = NamedSharding(data_mesh, P())
    by_batch = NamedSharding(data_mesh, P(None, data_mesh.axis_names[0]))
    grad_fn = partial(loss_and_grads, config=tc.model)

    def epoch(ts, hyper, x, y):
        idx = step.epoch_order(ts.key, x.shape[0], tc)  # the order train_epoch draws
        idx = jax.lax.with_sharding_constraint(idx, by_batch)  # (num_batches, batch/n per device)
        return step._epoch(ts, hyper, x, y, tc, idx, grad_fn)

    return jax.jit(
        epoch,
        in_shardings=(replicated,) * 4,
        out_shardings=replicated,
        donate_argnums=0,
        compiler_options=compiler.epoch_options(),
    )


def member_shardings(n_devices: int | None = None):
    """(member-axis sharding, replicated sharding) over the first ``n_devices`` devices; (None, None)
    on one device."""
    devices = jax.devices()[: n_devices or jax.device_count()]
    if len(devices) <= 1:
        return None, None
    m = mesh("members", devices)
    return NamedSharding(m, P("members")), NamedSharding(m, P())


def to_host(tree):
    """NumPy copies of a pytree of arrays, whole on every process: a member-sharded array of a sweep
    over several processes is gathered from all of them (``multihost_utils.process_allgather``)."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def agree(value: int) -> int:
    """Process 0's ``value`` on every process (a decision each process made from its own timing)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def share(obj):
    """Process 0's ``obj`` (anything JSON can hold, NaN included) on every process: what process 0 read
    from disk (a resumed sweep's progress), so that every process takes the same branches and enters
    the same collectives."""
    if jax.process_count() == 1:
        return obj
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode(), np.uint8) if jax.process_index() == 0 else np.zeros(0, np.uint8)
    buffer = np.zeros(agree(len(data)), np.uint8)
    buffer[: len(data)] = data
    return json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode())


def smallest(value: int) -> int:
    """The smallest of every process's ``value`` (a size each process chose from its own free memory)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(np.min(multihost_utils.process_allgather(np.int32(value))))
