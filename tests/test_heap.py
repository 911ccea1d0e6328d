"""Freed memory kept in the process while a grid runs (glibc), and nothing done elsewhere."""

from __future__ import annotations

import resource

import pytest
import torch

from landscaper import _heap
from landscaper._heap import keeps_heap, retained_heap

glibc = pytest.mark.skipif(_heap._glibc() is None, reason="the C library is not glibc")


def _faults_of_reallocating(mebibytes: int, times: int) -> int:
    """Minor page faults of allocating, touching and freeing the same-sized tensor again and
    again, after the first time."""
    torch.ones(mebibytes * 2**18)  # the first allocation may fault its pages in
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        torch.ones(mebibytes * 2**18)  # float32: 2**18 entries per MiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc
def test_reallocations_inside_the_block_fault_no_new_pages(monkeypatch):
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    times = 20
    fresh_mappings = times * (16 * 2**20 // resource.getpagesize())  # 81,920 with 4 KiB pages
    with retained_heap():
        with retained_heap():  # re-entrant: the inner exit keeps the outer block's settings
            pass
        faults = _faults_of_reallocating(16, times)
    # Kept pages fault only for reasons outside the allocator (e.g. the kernel's NUMA
    # balancing unmaps pages to sample accesses: 12,288 faults seen on a CI host).
    assert faults < fresh_mappings // 4, faults
    assert _heap._depth == 0


@glibc
@pytest.mark.parametrize("name, value", [("MALLOC_MMAP_THRESHOLD_", "65536"),
                                         ("MALLOC_TRIM_THRESHOLD_", "65536"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")])
def test_thresholds_the_user_set_stand(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(_heap, "_libc", type("Libc", (), {
        "mallopt": lambda *args: calls.append(args),
        "malloc_trim": lambda *args: calls.append(args)})())
    with retained_heap():
        pass
    assert calls == [] and _heap._depth == 0


def test_elsewhere_it_only_runs_the_block(monkeypatch):
    monkeypatch.setattr(_heap, "_glibc", lambda: None)
    ran = []
    with retained_heap():
        ran.append(1)

    @keeps_heap
    def run(x):
        """Its own docstring."""
        return 2 * x

    assert ran == [1] and run(3) == 6 and run.__doc__ == "Its own docstring."


@glibc
def test_the_block_is_left_on_an_exception():
    with pytest.raises(KeyError), retained_heap():
        raise KeyError("inside")
    assert _heap._depth == 0
