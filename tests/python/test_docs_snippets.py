"""Every ```python block of README.md and docs/*.md runs, against a throwaway server: a
snippet that breaks fails CI. A block that is not meant to run carries another tag (`pycon`
for sessions with output, `starlark` for Bazel files). Blocks that import TFRA run in the TF
2.16 leg (legacy Keras, as the README says); blocks of `redis_embedding.keras` in the Keras 3
leg. Each runs in its own interpreter, in a directory holding the `redis.json` it names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from optional_tfra import tfra

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def python_blocks() -> List[Tuple[str, str]]:
    """(`file:line`, code) of every block tagged python."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == "python":
                line = text.count("\n", 0, m.start()) + 1
                found.append((f"{doc.relative_to(ROOT)}:{line}", m.group(2)))
    return found


BLOCKS = python_blocks()


def keras_major() -> int:
    import keras

    return int(keras.__version__.split(".")[0])


def test_the_docs_hold_runnable_blocks_of_both_kinds() -> None:
    """The scan finds the README's two snippets and the Keras guide's (so a change to the fence
    syntax cannot make the test below pass by finding nothing)."""
    where = [w for w, _ in BLOCKS]
    assert any("tensorflow_recommenders_addons" in c for _, c in BLOCKS), where
    assert sum("rde.keras" in c for _, c in BLOCKS) >= 2, where


@pytest.mark.parametrize("where,code", BLOCKS, ids=[w for w, _ in BLOCKS])
def test_the_block_runs(redis, tmp_path: Path, where: str, code: str) -> None:
    env = dict(os.environ)
    if "tensorflow_recommenders_addons" in code:
        if tfra is None:
            pytest.skip("a TFRA snippet: runs in the TF 2.16 leg")
        env["TF_USE_LEGACY_KERAS"] = "1"
    elif "rde.keras" in code:
        # The TF 2.16 leg's TFRA patches Keras 3's initializers (see test_keras.py).
        if tfra is not None or keras_major() < 3:
            pytest.skip("a Keras 3 snippet: runs in the TF 2.21 leg")
        env.pop("TF_USE_LEGACY_KERAS", None)
    redis.config(tmp_path / "redis.json")
    (tmp_path / "snippet.py").write_text(code)
    out = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{where}:\n{code}\n{out.stderr[-3000:]}"
