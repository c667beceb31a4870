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


def test_admission_by_atoms_keeps_the_budget_but_always_admits_into_an_empty_pipeline():
    s = AsyncSchedule(max_atoms=10)
    assert s.can_admit(True, 25)                  # nothing in flight: even a large one
    s.admitted(True, 25)
    assert not s.can_admit(True, 1)
    s.completed(True, 25)
    s.admitted(True, 6)
    assert s.can_admit(False, 4) and not s.can_admit(True, 5)
    s.admitted(False, 4)
    assert not s.can_admit(True, 1)
    s.completed(True, 6)
    assert s.can_admit(True, 6) and s.atoms == 4 and s.n == 1
    with pytest.raises(ValueError):
        AsyncSchedule(max_atoms=0)


def test_admission_text_forms():
    from molpipe.runtime.schedule import parse_admission

    assert parse_admission("instances") is None and parse_admission("atoms:300") == 300
    for bad in ("atoms", "atoms:0", "atoms:-3", "atoms:1.5", "molecules:3", "instances:2"):
        with pytest.raises(ValueError, match="admission must be instances or atoms:N"):
            parse_admission(bad)
    assert make_schedule("async", 4, max_atoms=50).max_atoms == 50
    with pytest.raises(ValueError, match="async"):
        make_schedule("sync", 4, max_atoms=50)
