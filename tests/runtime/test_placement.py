"""Stage placement as text: parsing and its errors."""

import pytest

from molpipe.runtime.placement import parse_placement

STAGES = ["embed", "message", "update", "rings", "readout", "loss"]


def test_groups_are_workers():
    p = parse_placement("embed, message,readout / update,rings,loss", STAGES)
    assert p == {"embed": 0, "message": 0, "readout": 0, "update": 1, "rings": 1, "loss": 1}
    # known names need not all be placed when ``complete`` is off (the CLI's early check)
    assert parse_placement("embed,message/update", STAGES, complete=False) == {
        "embed": 0, "message": 0, "update": 1}


@pytest.mark.parametrize("text, fragment", [
    ("embed,message/update,rings,readout,loss,ring", "unknown stage 'ring'"),
    ("embed,message/message,update,rings,readout,loss", "'message' is placed twice"),
    ("embed,message/update,readout,loss", "'rings' has no worker"),
    ("embed,message//update,rings,readout,loss", "worker 1 has no stages"),
])
def test_errors_name_the_problem(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_placement(text, STAGES)
