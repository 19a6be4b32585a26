"""The MBPP copy shipped in the package loads on its own, so a clean clone without ../shared works."""

from __future__ import annotations

from pathlib import Path

import services.pipeline.datasets.loaders as datasets


def test_packaged_mbpp_loads_all_397_tasks() -> None:
    packaged = Path(datasets.__file__).resolve().parent / "data" / datasets.MBPP_FILE
    result = datasets.load_mbpp(packaged)
    assert len(result.tasks) == 397
    assert not result.errors


def test_default_path_falls_back_to_the_packaged_copy(monkeypatch, tmp_path) -> None:
    fake_module = tmp_path / "repo" / "services" / "pipeline" / "datasets.py"
    fake_module.parent.mkdir(parents=True)
    monkeypatch.setattr(datasets, "__file__", str(fake_module))
    assert datasets.default_mbpp_path() == fake_module.parent / "data" / datasets.MBPP_FILE
