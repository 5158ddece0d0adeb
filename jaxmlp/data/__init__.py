"""Data: IDX files in, normalized device-ready arrays and on-device batch orders out.

Contract::

    ds = load_dataset("fashion-mnist", data_dir=None, dev_size=10_000, seed=0)   # prepare
    images = read_idx(path, expect="images")                                    # idx
    files = find_files("mnist", data_dir)                                       # sources
    idx = batch_indices(key, ds.x_train.shape[0], 128)                          # batching
    ds = load_file("mine.csv", label_column="label", dev_size=None, seed=0)     # tables

One module per concern: ``idx`` reads and validates IDX files; ``sources`` finds or downloads a
dataset's files; ``prepare`` splits, normalizes (training statistics only) and builds ``Dataset``;
``batching`` draws permutations and batch rows on the device; ``tables`` reads a user's own ``.npz`` or
``.csv`` file into a ``Dataset`` (``Dataset.from_arrays``). Every failure to find or read data
raises ``DatasetError`` whose message names the file and the problem.
"""

from jaxmlp.data.batching import batch_indices, check_batch_size, permutation
from jaxmlp.data.idx import IMAGES_MAGIC, LABELS_MAGIC, NUM_CLASSES, DatasetError, read_idx, read_pair
from jaxmlp.data.prepare import (
    Dataset,
    Normalizer,
    Standardizer,
    back_one_hot,
    fit_normalizer,
    fit_standardizer,
    load_dataset,
    load_test_split,
    normalize,
    normalizer_from_dict,
    one_hot,
    prepare,
    split_train_dev,
    subset,
    validate_images,
)
from jaxmlp.data.sources import (
    DATASETS,
    ROLES,
    DatasetSpec,
    cache_dir,
    candidate_names,
    download,
    download_file,
    find_files,
    find_in,
)
from jaxmlp.data.tables import load_file

__all__ = [
    "DATASETS",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "NUM_CLASSES",
    "ROLES",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "Normalizer",
    "Standardizer",
    "back_one_hot",
    "batch_indices",
    "cache_dir",
    "candidate_names",
    "check_batch_size",
    "download",
    "download_file",
    "find_files",
    "find_in",
    "fit_normalizer",
    "fit_standardizer",
    "load_dataset",
    "load_test_split",
    "normalize",
    "normalizer_from_dict",
    "load_file",
    "one_hot",
    "permutation",
    "prepare",
    "read_idx",
    "read_pair",
    "split_train_dev",
    "subset",
    "validate_images",
]
