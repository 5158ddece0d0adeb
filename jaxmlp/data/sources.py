"""Where a dataset's four IDX files are: a user's folder, ``$JAXMLP_DATA``, Debian's package, the
cache, or a download checked against the published SHA-256.

Contract::

    files = find_files("fashion-mnist", data_dir=None)   # {"train_images": Path, ...}
    names = candidate_names("train_images")               # the accepted spellings, official first

Where files come from, in order (``find_files``): ``data_dir`` (``--data-dir``; authoritative: no
fallback), ``$JAXMLP_DATA`` (the folder itself or its ``<name>/`` subfolder), Debian's
``/usr/share/datasets/<name>`` (Fashion-MNIST, package ``dataset-fashion-mnist``), the cache
``$XDG_CACHE_HOME/jaxmlp/<name>`` (default ``~/.cache/jaxmlp/<name>``), else a download from the public
mirrors into the cache, each file checked against its published SHA-256 before it is renamed into
place (``files.atomic_write``: a dropped connection or a wrong hash leaves nothing behind).

File names: the official ``train-images-idx3-ubyte.gz`` and the seed notebook's
``train-images.idx3-ubyte``, each gzipped or raw.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jaxmlp.data.idx import DatasetError
from jaxmlp.files import atomic_write

DEBIAN_ROOT = Path("/usr/share/datasets")

# The four files of a dataset, by role. Each role accepts several spellings (official first).
ROLES = ("train_images", "train_labels", "test_images", "test_labels")
_STEMS = {
    "train_images": ("train-images", "idx3"),
    "train_labels": ("train-labels", "idx1"),
    "test_images": ("t10k-images", "idx3"),
    "test_labels": ("t10k-labels", "idx1"),
}


def candidate_names(role: str) -> tuple[str, ...]:
    """File names accepted for a role, official spelling first."""
    stem, kind = _STEMS[role]
    official = f"{stem}-{kind}-ubyte"
    dotted = f"{stem}.{kind}-ubyte"  # the seed notebook's spelling
    return (official + ".gz", official, dotted, dotted + ".gz")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    mirrors: tuple[str, ...]
    sha256: dict  # official file name -> published SHA-256 of the .gz file
    debian_dir: Path | None = None


# Published SHA-256 digests of the original gzip files (the same ones TensorFlow Datasets checks).
DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        debian_dir=DEBIAN_ROOT / "fashion-mnist",
    ),
}


def find_in(folder: Path) -> dict | None:
    """Map each role to a file in ``folder``; None if the folder holds none of them."""
    found = {}
    for role in ROLES:
        for name in candidate_names(role):
            if (folder / name).is_file():
                found[role] = folder / name
                break
    return found or None


def _complete(folder: Path, found: dict) -> dict:
    missing = [candidate_names(r)[0] for r in ROLES if r not in found]
    if missing:
        raise DatasetError(
            f"{folder}: missing {', '.join(missing)} (also accepted: the raw and dotted spellings, "
            f"e.g. {candidate_names(ROLES[0])[2]})"
        )
    return found


def cache_dir(name: str) -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "jaxmlp" / name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: Path, sha256: str, timeout: float = 30.0) -> Path:
    """Fetch ``url`` into ``dest`` atomically (``files.atomic_write``), kept only if the hash matches.

    A dropped connection or a wrong hash raises ``DatasetError`` and leaves ``dest`` as it was.
    """
    try:
        with atomic_write(dest, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            h = hashlib.sha256()
            expected_len = resp.headers.get("Content-Length")
            n = 0
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
                h.update(block)
                n += len(block)
            if expected_len is not None and n != int(expected_len):
                raise DatasetError(f"{url}: connection closed after {n} of {expected_len} bytes")
            digest = h.hexdigest()
            if digest != sha256:
                raise DatasetError(f"{url}: SHA-256 mismatch (got {digest}, published {sha256})")
        return dest
    except DatasetError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise DatasetError(f"{url}: download failed ({type(e).__name__}: {e})") from None


def download(spec: DatasetSpec, dest_dir: Path, mirrors: Sequence[str] | None = None) -> dict:
    """Download the four official files of ``spec`` into ``dest_dir``, trying each mirror in turn."""
    mirrors = tuple(mirrors) if mirrors is not None else spec.mirrors
    found = {}
    for role in ROLES:
        name = candidate_names(role)[0]
        target = dest_dir / name
        if target.is_file() and _sha256(target) == spec.sha256[name]:
            found[role] = target
            continue
        errors = []
        for base in mirrors:
            try:
                found[role] = download_file(base + name, target, spec.sha256[name])
                break
            except DatasetError as e:
                errors.append(str(e))
        else:
            raise DatasetError(f"could not download {name}: " + "; ".join(errors))
    return found


def find_files(name: str, data_dir=None, *, allow_download: bool = True, mirrors=None) -> dict:
    """Locate (or fetch) the four files of dataset ``name``; returns {role: Path}."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if data_dir is not None:  # an explicit folder is authoritative: no fallback behind the user's back
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DatasetError(f"--data-dir {folder}: no such folder")
        return _complete(folder, find_in(folder) or {})
    looked = []
    candidates = []
    env = os.environ.get("JAXMLP_DATA")
    if env:
        candidates += [Path(env), Path(env) / name]
    if spec.debian_dir is not None:
        candidates.append(spec.debian_dir)
    cache = cache_dir(name)
    candidates.append(cache)
    for folder in candidates:
        looked.append(str(folder))
        found = find_in(folder) if folder.is_dir() else None
        if found:
            return _complete(folder, found)
    if not allow_download:
        raise DatasetError(_not_found_message(spec, looked, "downloads are disabled"))
    try:
        return download(spec, cache, mirrors)
    except DatasetError as e:
        raise DatasetError(_not_found_message(spec, looked, str(e))) from None


def _not_found_message(spec: DatasetSpec, looked, why: str) -> str:
    hint = "pass --data-dir DIR (or set JAXMLP_DATA) to a folder holding the four IDX files"
    if spec.debian_dir is not None:
        hint += f", or install the Debian package: apt-get install dataset-{spec.name}"
    return f"{spec.name}: no data in {', '.join(looked)} and download failed ({why}); {hint}"
