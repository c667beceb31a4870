"""Stage placement as text: parsing, its errors, and the round trip."""

import pytest

from molpipe.runtime.placement import format_placement, parse_placement

STAGES = ["embed", "message", "update", "rings", "readout", "loss"]


def test_groups_are_workers():
    p = parse_placement("embed, message,readout / update,rings,loss", STAGES)
    assert p == {"embed": 0, "message": 0, "readout": 0, "update": 1, "rings": 1, "loss": 1}
    assert parse_placement(format_placement(p), STAGES) == p
    assert format_placement(p) == "embed,message,readout/update,rings,loss"


@pytest.mark.parametrize("text, fragment", [
    ("embed,message/update,rings,readout,loss,ring", "unknown stage 'ring'"),
    ("embed,message/message,update,rings,readout,loss", "'message' is placed twice"),
    ("embed,message/update,readout,loss", "'rings' has no worker"),
    ("embed,message//update,rings,readout,loss", "worker 1 has no stages"),
])
def test_errors_name_the_problem(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_placement(text, STAGES)
