"""Checkpoints: one ``.npz`` of named arrays plus a JSON metadata string. Never pickle.

Contract::

    save(path, {"train": train_state, "best": best}, meta={"config": ..., ...})   # atomic
    meta, arrays = load(path)                       # np.load(allow_pickle=False) underneath
    tree = restore(template, arrays, "train")       # same structure, shapes and dtypes as template

Pytrees are flattened with their key paths ("train/params/0/W"); ``restore`` refills a template
(built from the saved config) and refuses any missing array or shape/dtype mismatch, so a file from
another architecture is a clear error, not silent garbage. ``save`` writes through
``files.atomic_write`` (temp file in the same folder, fsync, ``os.replace``): a crash leaves the old
file or the new one, never half of either. Files from a newer ``FORMAT_VERSION`` are refused.

Format versions: 1 was written by jaxmlp 0.1.0; 2 (jaxmlp 0.2.0) records ``jaxmlp_version`` and
stores dropout and EMA only as ``Hyper`` numbers (``None``: absent). Reading a version-1 file's
metadata into today's configuration is ``jaxmlp.run``'s job (``load_model`` and resume).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import jax
import numpy as np

from jaxmlp._version import __version__
from jaxmlp.files import atomic_write

FORMAT_VERSION = 2
_META = "__meta__"


class CheckpointError(Exception):
    """A checkpoint could not be written, read or matched to the model; the message says why."""


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def flatten(prefix: str, tree) -> dict:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join([prefix] + [_key_name(k) for k in path]): np.asarray(leaf) for path, leaf in leaves}


def save(path, trees: dict, meta: dict) -> None:
    """Write ``trees`` ({prefix: pytree}) and the JSON-able ``meta`` to ``path`` atomically; the meta
    gains ``format_version`` and ``jaxmlp_version``."""
    path = Path(path)
    arrays = {}
    for prefix, tree in trees.items():
        arrays.update(flatten(prefix, tree))
    meta = {"format_version": FORMAT_VERSION, "jaxmlp_version": __version__, **meta}
    arrays[_META] = np.array(json.dumps(meta))
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def load(path):
    """(meta, {name: NumPy array}) of a checkpoint; CheckpointError (one line) for a file that is
    missing, not an .npz, truncated, holds a pickled object, has no jaxmlp metadata or a newer format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise CheckpointError(f"{path}: not a checkpoint (.npz) file; a run's checkpoint is its checkpoint.npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError(f"{path}: holds a pickled object; refusing to load it") from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or not an .npz checkpoint ({e})") from None
    if _META not in arrays:
        raise CheckpointError(f"{path}: no jaxmlp metadata; not a jaxmlp checkpoint")
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from None
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version} is newer than this jaxmlp reads ({FORMAT_VERSION}); upgrade jaxmlp"
        )
    return meta, arrays


def restore(template, arrays: dict, prefix: str, *, source="checkpoint"):
    """Fill ``template``'s structure with the arrays saved under ``prefix``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, leaf in leaves:
        name = "/".join([prefix] + [_key_name(k) for k in path])
        if name not in arrays:
            raise CheckpointError(f"{source}: no array {name}; the file is for a different architecture")
        a = arrays[name]
        want = np.asarray(leaf)
        if a.shape != want.shape or a.dtype != want.dtype:
            raise CheckpointError(
                f"{source}: {name} is {a.dtype}{list(a.shape)} but this model needs "
                f"{want.dtype}{list(want.shape)}; the file is for a different architecture"
            )
        out.append(jax.numpy.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, out)
