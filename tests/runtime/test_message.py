"""Message routing: one destination function for every backend."""

import dataclasses

import pytest

from molpipe.runtime.message import CONTROL, Kind, Message, destination

PLACEMENT = {"a": 0, "b": 1, "c": 1}


def test_destination():
    assert destination(Message(Kind.FORWARD, 1, "c", 2), PLACEMENT) == 1
    assert destination(Message(Kind.BACKWARD, 1, "a", 0), PLACEMENT) == 0
    assert destination(Message(Kind.UPDATE, worker=1), PLACEMENT) == 1
    for kind in (Kind.RESULT, Kind.DONE, Kind.ERROR, Kind.UPDATED, Kind.STATS):
        assert destination(Message(kind, 1, "a", worker=0), PLACEMENT) == CONTROL


def test_messages_are_immutable():
    m = Message(Kind.FORWARD, 1, "a", path=(("a", 0),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.step = 3
