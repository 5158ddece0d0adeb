"""The one atomic file writer every output of jaxmlp goes through (checkpoints, metrics, summaries,
plots, sweep results, downloads). Imports nothing from jaxmlp.

Contract::

    with atomic_write(path, "wb") as f:      # or "w" (text, UTF-8)
        f.write(data)

The data goes to a temp file ``<name>.<random>.tmp`` in the target's folder (created if missing),
which is flushed, fsynced and renamed over the target with ``os.replace`` when the block ends
normally: readers see the old file or the new one, never half of either. An exception inside the
block deletes the temp file and leaves the target as it was. A process killed inside the block can
leave the temp file behind (never the target half-written); ``run.OutputFolder`` removes such
leftovers. The file gets the mode a plain ``open`` would give it (0666 less the umask), not
``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process's umask, read without changing it where Linux reports it (/proc/self/status), else
    by setting and restoring it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", *, newline=None):
    """Open a temp file beside ``path`` for writing (``mode`` "w" or "wb"); on a clean exit fsync it
    and rename it over ``path``; on an exception delete it and leave ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would create it (mkstemp's is 0600)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": newline, "encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
