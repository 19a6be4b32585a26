"""Giving freed memory back to the operating system (glibc malloc), for the processes that load, train and
swap models one after another in one address space (the embedded ``btp run``, the generator, the worker).

Freed tensors go back to malloc, not necessarily to the kernel: glibc raises its mmap threshold up to
32 MiB after a large block is freed, so later allocations below that size come from heap arenas that
fragment and are kept (measured: the main job's resident memory grew by gigabytes across phases that
each free what they allocated). :func:`tune_malloc` pins the threshold (blocks of 1 MiB and more are
always their own mapping, unmapped when freed) and :func:`release_memory` collects reference cycles
(Hugging Face models hold some) and trims the arenas. Both do nothing where there is no glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 64 << 20


@lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.mallopt  # noqa: B018 - glibc only
        lib.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return lib


def mmap_threshold() -> int:
    """The mmap threshold to pin, in bytes: ``BTP_MALLOC_MMAP_THRESHOLD_MB`` (0 leaves glibc's own, which
    moves), default :data:`MMAP_THRESHOLD`."""
    raw = os.environ.get("BTP_MALLOC_MMAP_THRESHOLD_MB", "").strip()
    if not raw:
        return MMAP_THRESHOLD
    try:
        return max(0, int(float(raw) * (1 << 20)))
    except ValueError:
        log.warning("BTP_MALLOC_MMAP_THRESHOLD_MB=%r is not a number; using %d MiB", raw, MMAP_THRESHOLD >> 20)
        return MMAP_THRESHOLD


@lru_cache(maxsize=1)
def tune_malloc() -> bool:
    """Pin glibc's mmap threshold (once per process); False where it does not apply."""
    lib = _libc()
    if lib is None:
        return False
    threshold = mmap_threshold()
    if threshold == 0:  # any mallopt of these would also stop glibc from moving its threshold
        return False
    ok = bool(lib.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(lib.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("malloc tuned: %s", ok)
    return ok


def release_memory() -> None:
    """Collect reference cycles and return free heap memory to the kernel."""
    gc.collect()
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
