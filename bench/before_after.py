"""Run a benchmark against an earlier commit too, so "before" and "after" come from one invocation.

`checkout(ref)` extracts the commit's tracked files (`git archive`, no worktree, nothing in the repository
changes) into a temporary folder; `run_script(tree, script, args)` runs *this* checkout's copy of the script
there, so it imports that tree's `studio` (every script puts its own folder's parent first on sys.path).
A script written for both trees reads a field or function only where it exists.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """The tracked files of `ref` in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-before-") as folder:
        archive = Path(folder) / "tree.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "--output", str(archive), ref], check=True)
        tree = Path(folder) / "tree"
        with tarfile.open(archive) as tar:
            tar.extractall(tree, filter="data")
        yield tree


def run_script(tree: Path, script: Path, args: list[str]) -> str:
    """Run this checkout's `script` inside `tree` with `args` (this helper goes with it); its standard output."""
    (tree / "bench").mkdir(exist_ok=True)
    for source in (script, Path(__file__)):
        shutil.copy(source, tree / "bench" / source.name)
    done = subprocess.run(
        [sys.executable, str(tree / "bench" / script.name), *args], cwd=tree, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} in {tree} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout
