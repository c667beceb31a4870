"""Stage placement written as text: ``"embed,message,readout/update,rings,loss"``.

Groups separated by ``/`` are workers (worker k hosts the k-th group); the stages of a group
share one worker, and messages between them skip the queue. The default is one worker per
stage (measured against two- and three-worker placements: ``benchmarks/README.md``).
"""

from __future__ import annotations

from typing import Sequence


def parse_placement(text: str, stages: Sequence[str] | None = None,
                    complete: bool = True) -> dict[str, int]:
    """``{stage: worker}`` from ``text``; with ``stages``, only those, and (``complete``)
    every one of them placed exactly once.

    Raises ValueError naming the problem (unknown, repeated or missing stage, empty group).
    """
    placement: dict[str, int] = {}
    groups = text.split("/")
    for wid, group in enumerate(groups):
        names = [s.strip() for s in group.split(",") if s.strip()]
        if not names:
            raise ValueError(f"placement {text!r}: worker {wid} has no stages "
                             "(groups are separated by '/', stages by ',')")
        for name in names:
            if stages is not None and name not in stages:
                raise ValueError(f"placement {text!r}: unknown stage {name!r} "
                                 f"(the network's stages: {', '.join(stages)})")
            if name in placement:
                raise ValueError(f"placement {text!r}: stage {name!r} is placed twice")
            placement[name] = wid
    if stages is not None and complete:
        missing = [s for s in stages if s not in placement]
        if missing:
            raise ValueError(f"placement {text!r}: stage {missing[0]!r} has no worker "
                             f"(the network's stages: {', '.join(stages)})")
    return placement

