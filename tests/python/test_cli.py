"""The `redis-embedding` admin tool ships with the package: it is installed beside the
interpreter, needs no TensorFlow, and lists the tables the ops wrote. (Each command is tested
in depth by tests/cli.rs; this checks the installed binary.)"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

import redis_embedding as rde
from optional_tfra import de, requires_tfra

CLI = pathlib.Path(sys.executable).parent / "redis-embedding"

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("RDE_OPS_LIBRARY")),
    reason="RDE_OPS_LIBRARY: testing a library from a build tree, not an installed package")


def test_the_tool_is_installed_and_needs_no_tensorflow() -> None:
    assert CLI.is_file() and os.access(CLI, os.X_OK), f"{CLI} missing: not in the wheel?"
    linked = subprocess.run(["ldd", str(CLI)], capture_output=True, text=True).stdout
    assert "tensorflow" not in linked, linked
    out = subprocess.run([str(CLI), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("redis-embedding "), out.stdout


def test_the_installed_tool_lists_what_the_ops_wrote(config_path: str) -> None:
    t = rde.RedisTable(tf.int64, tf.float32, [0.0, 0.0, 0.0], name="cli_emb",
                       config=rde.RedisTableConfig(config_path))
    t.insert([1, 2, 3, 4], [[1.0, 2.0, 3.0]] * 4)
    out = subprocess.run([str(CLI), "--config", config_path, "--json", "ls"],
                         capture_output=True, text=True, check=True)
    tables = {x["table"]: x for x in json.loads(out.stdout)["tables"]}
    assert tables["cli_emb"]["rows"] == 4
    assert tables["cli_emb"]["row_bytes"] == 12


@requires_tfra
def test_tables_tfra_wrote_are_listed_and_check_clean(config_path: str) -> None:
    """A TFRA user points the tool at TFRA's own tables: listed with TFRA's layout, and
    `check` reads every row without a finding."""
    theirs = de.RedisTable(tf.int64, tf.float32, [0.0] * 4, name="tfra_emb_mht_1of1",
                           config=de.RedisTableConfig(redis_config_abs_dir=config_path))
    theirs.insert(tf.range(100, dtype=tf.int64), tf.ones([100, 4]))
    out = subprocess.run([str(CLI), "--config", config_path, "--json", "ls"],
                         capture_output=True, text=True, check=True)
    # TFRA keys a table by its name without the shard suffix `_mht_1of1`.
    t = {x["table"]: x for x in json.loads(out.stdout)["tables"]}["tfra_emb"]
    assert (t["rows"], t["layout"], t["row_bytes"], t["recorded"]) == (100, "tfra", 16, False)
    check = subprocess.run([str(CLI), "--config", config_path, "check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "checked 100 rows in 1 table(s): no findings" in check.stdout
