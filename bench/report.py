"""Writes one benchmark's section of docs/benchmarks.md: replaced in place when a section of
that name exists, else appended, with the command that produced it and the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Optional

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmarks.md")


def machine(tf_version: Optional[str] = None) -> str:
    redis = subprocess.run(["redis-server", "--version"], capture_output=True,
                           text=True).stdout.split()[2]
    tf = f", TensorFlow {tf_version}" if tf_version else ""
    return (f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}{tf}, redis-server {redis}.")


def write_section(name: str, body: str, command: str, tf_version: Optional[str] = None) -> None:
    text = open(PATH).read() if os.path.exists(PATH) else "# Benchmarks\n"
    section = f"## {name}\n\nCommand: `{command}`\n\n{machine(tf_version)}\n\n{body}\n"
    start = text.find(f"## {name}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(PATH, "w") as f:
        f.write(text)
