"""Runs a benchmark of this tree and of an earlier revision alternately, on the same
machine, and compares them: the way to tell whether a change made things slower.

    python benchmarks/interleave.py --base REV [--runs 3] [--script benchmarks/node.py] [-- ARGS]

The earlier revision is checked out into a temporary git worktree; each run
imports the package from its own tree (PYTHONPATH). Runs alternate (base, this,
this, base, ...) so drift in the machine's load falls on both sides alike.
Prints every run's JSON line as it comes, then one JSON line: the median of
each figure per side and the ratio this/base.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(tree: Path, script: str, args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree / "operator")}
    result = subprocess.run(
        [sys.executable, str(tree / script), *args],
        cwd=tree, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{tree}/{script} failed:\n{result.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="the revision to compare with")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side")
    parser.add_argument("--script", default="benchmarks/node.py")
    parser.add_argument("args", nargs="*", help="arguments of the benchmark (after --)")
    options = parser.parse_args(argv)
    base_tree = Path(tempfile.mkdtemp(prefix="agentmem-base-")) / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), options.base],
        check=True, capture_output=True,
    )  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "this": []}
    try:
        for i in range(options.runs):
            order = ("base", "this") if i % 2 == 0 else ("this", "base")
            for side in order:
                tree = base_tree if side == "base" else ROOT
                say(f"run {i + 1}/{options.runs}: {side} ...")
                result = run(tree, options.script, options.args)
                runs[side].append(result)
                print(json.dumps({"side": side, "run": i + 1, **result}), flush=True)
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
            check=False, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(base_tree.parent, ignore_errors=True)
    summary: dict[str, Any] = {"base": options.base, "runs": options.runs}
    for name in runs["this"][0]:
        values = {side: [r[name] for r in runs[side] if name in r] for side in runs}
        if not all(isinstance(v, (int, float)) for side in values for v in values[side]):
            continue
        if not values["base"]:
            continue
        base, this = statistics.median(values["base"]), statistics.median(values["this"])
        summary[name] = {
            "base": base,
            "this": this,
            "ratio": round(this / base, 3) if base else None,
        }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
