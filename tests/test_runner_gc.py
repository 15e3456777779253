"""A started node's heap is frozen out of the garbage collector's full collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from node.runner import freeze_start_up_heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_the_started_heap_is_frozen_and_start_up_garbage_is_not(unfrozen: None) -> None:
    garbage = _Cycle()
    gone = weakref.ref(garbage)
    del garbage  # unreachable, but only the cyclic collector can free it

    freeze_start_up_heap()

    assert gc.get_freeze_count() > 0
    assert gone() is None  # collected before the freeze, not kept forever by it
