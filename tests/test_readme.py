"""README.md's Python examples run as written (on a slice of Fashion-MNIST, so in seconds)."""

import re

import jax
import numpy as np
import pytest

import jaxmlp

from helpers import FASHION_DIR, REPO

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_readme_has_python_examples_that_import_only_jaxmlp():
    assert len(BLOCKS) >= 3
    imports = {
        line.strip() for block in BLOCKS for line in block.splitlines() if line.strip().startswith(("import ", "from "))
    }
    assert imports == {"import jax", "import jaxmlp as jm"}


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs Fashion-MNIST (make test installs it)")
def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    full = jaxmlp.load_dataset("fashion-mnist", allow_download=False)
    monkeypatch.setattr(jaxmlp, "load_dataset", lambda *a, **k: jaxmlp.data.subset(full, 2000, 500, 500))
    monkeypatch.chdir(tmp_path)  # the examples write runs/… into the current folder
    namespace = {}
    x64 = jax.config.jax_enable_x64
    try:
        for i, block in enumerate(BLOCKS):
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    finally:
        jax.config.update("jax_enable_x64", x64)
    assert namespace["logits"].shape == (128, 10) and namespace["saliency"].shape == (128, 784)
    np.testing.assert_allclose(namespace["per_example"][:, 0], namespace["saliency"], rtol=1e-4, atol=1e-6)
    assert 0 < namespace["accuracy"] <= 1 and namespace["report"].ok
    assert (tmp_path / "runs" / "py" / "summary.json").is_file()
    mine = namespace["mine"]  # the "Your own data" block: what its comment says it prints
    assert mine.x_train.shape == (243, 2) and mine.num_classes == 2 and namespace["same"].x_dev.shape == (0, 2)
    assert (tmp_path / "runs" / "sweep-py" / "results.csv").is_file()
