"""Data-parallel training of one model over several devices with JAX's own sharding (no home-made
scheduler).

Contract::

    mesh = data_mesh()                                  # 1-D Mesh over all devices, axis "data"
    epoch = data_parallel_epoch(tc, mesh)               # jitted; same signature as train_epoch
    ts, metrics = epoch(ts, hyper, x_train, y_train)

Parameters, optimizer state and data are replicated (``NamedSharding(mesh, P())``); each epoch's
batch-index array is sharded along its batch axis (``P(None, "data")``), so each device gathers and
processes its slice of every batch. XLA's SPMD partitioner then inserts the all-reduces that sum the
weight gradients (and the batch-norm statistics) over devices, so the result is the single-device
epoch's, up to float summation order. The epoch draws its permutation exactly as ``train_epoch`` does.
The batch size must be a multiple of the number of devices.

Multi-host: call ``jax.distributed.initialize()`` on every host first; ``jax.devices()`` then lists
every host's devices and the same code runs unchanged (see README).
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxmlp import compiler, data, train


def data_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.array(devices), ("data",))


def data_parallel_epoch(tc: train.TrainConfig, mesh: Mesh):
    n = mesh.size
    if tc.batch_size % n:
        raise ValueError(f"batch size {tc.batch_size} must be a multiple of the {n} devices for data parallelism")
    replicated = NamedSharding(mesh, P())
    by_batch = NamedSharding(mesh, P(None, "data"))

    def epoch(ts, hyper, x, y):
        _, perm_key, _ = jax.random.split(ts.key, 3)  # the same split train_epoch makes
        idx = data.batch_indices(perm_key, x.shape[0], tc.batch_size)
        idx = jax.lax.with_sharding_constraint(idx, by_batch)  # (num_batches, batch/n per device)
        return train.train_epoch(ts, hyper, x, y, tc=tc, idx=idx)

    return jax.jit(epoch, in_shardings=(replicated,) * 4, out_shardings=replicated, donate_argnums=0,
                   compiler_options=compiler.epoch_options())
