"""glibc malloc tuning: the mmap threshold the processes pin, and the knob that leaves glibc's own."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

from services.models.memory import MMAP_THRESHOLD, mmap_threshold


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, MMAP_THRESHOLD), ("", MMAP_THRESHOLD), ("0", 0), ("4", 4 << 20), ("0.5", 1 << 19), ("-3", 0),
     ("lots", MMAP_THRESHOLD)],
)
def test_mmap_threshold_from_the_environment(value: str | None, expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("BTP_MALLOC_MMAP_THRESHOLD_MB", raising=False)
    else:
        monkeypatch.setenv("BTP_MALLOC_MMAP_THRESHOLD_MB", value)
    assert mmap_threshold() == expected


@pytest.mark.skipif(not ctypes.util.find_library("c"), reason="no C library to tune")
@pytest.mark.parametrize(("value", "tuned"), [("1", True), ("0", False)])
def test_tune_malloc_pins_or_leaves_glibc(value: str, tuned: bool) -> None:
    """In a fresh process (tune_malloc runs once per process): pinned by default, untouched with 0."""
    code = "from services.models import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], env={"BTP_MALLOC_MMAP_THRESHOLD_MB": value, "PATH": ""},
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])  # fmt: skip
    assert out.stdout.strip() == str(tuned)
