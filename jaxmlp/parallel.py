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

Multi-host: call ``jax.distributed.initialize()`` on every host first; ``jax.devices()`` then lists
every host's devices and the same code runs unchanged (see README).
"""

from functools import partial

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmlp import compiler, step
from jaxmlp.data.batching import batch_indices
from jaxmlp.mlp import loss_and_grads


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
        _, perm_key, _ = jax.random.split(ts.key, 3)  # the same split train_epoch makes
        idx = batch_indices(perm_key, x.shape[0], tc.batch_size)
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
