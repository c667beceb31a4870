"""Walk the README on a fresh clone: every set-up and tour command must exit 0.

    python benchmarks/walk_tour.py                 # clone this repo's HEAD into a temp dir
    python benchmarks/walk_tour.py --json tour.json --with-tests

The repository is cloned (``git clone``, so only committed files count) into a temporary
directory; a virtual environment made there (``--system-site-packages``: rdkit, numba and
friends are not downloaded again) receives the README's own ``pip install -e .``; then the
commands of the README's "Set up and run" and "A tour" blocks run in order, as written,
from the clone's root, with ``MOLPIPE_CACHE`` inside the temp dir. The test-suite command is
skipped unless ``--with-tests`` (CI runs it). A table of command, exit code and seconds is
printed; the exit code is 1 if any command failed. Each command has ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("## Set up and run", "## A tour")


def readme_commands(readme: str) -> list[str]:
    """The shell commands of the README's set-up and tour ```bash blocks, in order, without
    their trailing comments."""
    commands = []
    for title in SECTIONS:
        start = readme.index(title)
        end = readme.find("\n## ", start + len(title))
        section = readme[start:end if end >= 0 else len(readme)]
        for block in re.findall(r"```bash\n(.*?)```", section, re.S):
            for line in block.splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                if line and not line.startswith("#"):
                    commands.append(line)
    return commands


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=REPO, help="repository to clone (default: this one)")
    ap.add_argument("--with-tests", action="store_true", help="also run the test-suite command")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per command")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="molpipe-tour-"))
    clone = tmp / "molpipe"
    subprocess.run(["git", "clone", "--quiet", str(args.repo), str(clone)], check=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp / "venv")],
                   check=True)
    env = dict(os.environ, MOLPIPE_CACHE=str(tmp / "cache"),
               PATH=f"{tmp / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
               VIRTUAL_ENV=str(tmp / "venv"), COLUMNS="100")
    env.pop("PYTHONPATH", None)

    results = []
    print(f"README tour of {args.repo} at {head}, in {clone}", flush=True)
    for command in readme_commands((clone / "README.md").read_text(encoding="utf-8")):
        if "pytest" in command and not args.with_tests:
            results.append({"command": command, "exit_code": None, "seconds": None})
            print(f"  skip  {command}  (--with-tests runs it)", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(["bash", "-c", command], cwd=clone, env=env, text=True,
                                  capture_output=True, timeout=args.timeout)
            code, tail = proc.returncode, (proc.stdout + proc.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            code, tail = "timeout", ""
        seconds = time.perf_counter() - t0
        results.append({"command": command, "exit_code": code, "seconds": round(seconds, 1)})
        print(f"  {str(code):>5} {seconds:7.1f} s  {command}", flush=True)
        if code != 0:
            print("    " + tail.replace("\n", "\n    "), flush=True)
    failed = [r for r in results if r["exit_code"] not in (0, None)]
    print(f"{len(results) - len(failed)} of {len(results)} commands passed or skipped; "
          f"{len(failed)} failed", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"commit": head, "commands": results}, indent=2) + "\n")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
