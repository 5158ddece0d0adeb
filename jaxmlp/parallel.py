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
files (``jaxmlp.run`` / ``jaxmlp.sweep``). When a process dies, the others' next collective fails
(gloo: the connection is closed) with a ``jax.errors.JaxRuntimeError``, which ``lost_contact``
recognizes; the command line turns it into one line and an immediate exit (code 4). Two cases stay
JAX's own: when process 0, which hosts the coordination service, dies, the survivors' JAX client may
abort them first (exit 134, JAX's multi-line log; the client's callback for this cannot be set from
Python in JAX 0.10); a process that hangs without dying is declared dead by the coordinator after
``HEARTBEAT_TIMEOUT`` seconds, with the same abort.
"""

from functools import partial

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmlp import compiler, step
from jaxmlp.mlp import loss_and_grads

HEARTBEAT_TIMEOUT = 30  # seconds without a heartbeat after which JAX's coordinator declares a process dead


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> int:
    """Join the processes of one run with ``jax.distributed.initialize``, before anything else touches
    JAX; returns the number of processes. With ``coordinator`` ("HOST:PORT" of process 0, reachable by
    all), ``num_processes`` and ``process_id`` as given; without them, JAX's own cluster
    auto-detection (SLURM, Open MPI, Kubernetes, Cloud TPU, …) when it finds a cluster, and one
    process (nothing initialized) when it does not. ValueError (one line) for a wrong combination."""
    given = (coordinator, num_processes, process_id)
    if any(v is not None for v in given) and any(v is None for v in given):
        raise ValueError("--coordinator, --num-processes and --process-id go together: give all three, or none")
    if jax.distributed.is_initialized():  # joined already (a second command in this Python process)
        return jax.process_count()
    if coordinator is None:
        try:
            jax.distributed.initialize(heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT)
        except ValueError:  # "coordinator_address should be defined": no cluster found, one process
            return 1
        except RuntimeError:  # JAX already started in this process (a library caller): it stays one process
            return jax.process_count()
    else:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--coordinator takes HOST:PORT (process 0's address), got {coordinator!r}")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(
                f"--process-id must lie in [0, --num-processes) and --num-processes be ≥ 1, got "
                f"{process_id} and {num_processes}"
            )
        try:
            jax.distributed.initialize(
                coordinator, num_processes, process_id, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT
            )
        except RuntimeError as e:
            raise ValueError(f"cannot join the processes of the run: {str(e).splitlines()[0]}") from None
    # the backend starts lazily, so this still applies: CPU devices of several processes talk through gloo
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    return jax.process_count()


LOST_SIGNS = ("gloo", "connection", "unavailable", "heartbeat", "socket closed")  # in the runtime's message


def lost_contact(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process of the run is gone: a
    runtime error of a multi-process run whose message speaks of the transport (gloo's "Connection
    closed by peer", the coordinator's "UNAVAILABLE", …)."""
    if not (isinstance(error, jax.errors.JaxRuntimeError) and jax.process_count() > 1):
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


def smallest(value: int) -> int:
    """The smallest of every process's ``value`` (a size each process chose from its own free memory)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(np.min(multihost_utils.process_allgather(np.int32(value))))
