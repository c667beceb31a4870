"""The figures of issue #20 ("a million molecules on one machine, and more machines make it
faster"): one subcommand each, each printing JSON (and writing it with --json).

  preprocess   featurize vs parse; build_store of the MOSES file with 1 and 2 jobs
  label        the MOSES rows labelled with RDKit descriptors, and their store
  train        one training epoch streamed from the MOSES store, beside the QM9 subset
  predict      molpipe predict over the MOSES file (also predict-costs, fingerprint,
               evaluate, predict-model)
  replicas     data-parallel replicas over MPI ranks: measured, simulated, time to accuracy

Each section lives in ``benchmarks/scale/<section>.py`` with its own docstring and command.
Run: python benchmarks/bench_scale.py SECTION --help
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import predict, preprocess, replicas, train  # noqa: E402

SECTIONS = (preprocess, train, predict, replicas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    sub = parser.add_subparsers(dest="command", required=True, metavar="SECTION")
    for section in SECTIONS:
        section.add(sub)
    args = parser.parse_args()
    result = args.run(args)
    if result is None:                   # a child: it printed its own line
        return
    print(json.dumps(result, indent=2))
    if getattr(args, "json", None):
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
