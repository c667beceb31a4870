"""Schedules as pure state machines: exact admission and update sequences."""

import pytest

from molpipe.runtime.schedule import AsyncSchedule, SyncSchedule, make_schedule


def test_sync_groups_block_training_until_update():
    s = SyncSchedule(2)
    assert s.can_admit(True)
    s.admitted(True)
    s.admitted(True)
    assert not s.can_admit(True) and s.can_admit(False)   # evaluation still flows
    assert s.completed(False) is False
    assert s.completed(True) is False
    assert s.completed(True) is True                       # group of 2 complete: update
    assert s.can_admit(True)
    s.admitted(True)
    assert s.completed(True) is False
    assert s.flush() is True and s.flush() is False


def test_async_never_blocks_or_updates():
    s = AsyncSchedule()
    events = []
    for train in [True, False, True]:
        s.admitted(train)
        events.append((s.can_admit(train), s.completed(train)))
    assert events == [(True, False)] * 3 and not s.flush()


def test_make_schedule():
    assert make_schedule("sync", 3).size == 3
    assert make_schedule("sync", 3, sync_group=1).size == 1
    with pytest.raises(ValueError, match="sync group"):
        make_schedule("sync", 3, sync_group=0)
    assert make_schedule("async", 3).auto_update
    with pytest.raises(ValueError):
        make_schedule("other", 1)
