"""What the SDK tests install outside the virtualenv, each once and again only when its pinned
list changes: the old analytics-python (pip --target, beside the virtualenv) and the Node
libraries (`npm ci` into tests/sdk/node/node_modules, which git ignores)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
NODE_DIR = HERE / "node"
OLD_PYTHON = HERE / "analytics-python-1.txt"
STAMP = ".pier-installed"  # the sha256 of the pinned list the directory was installed from


def _installed(target: Path, pins: Path) -> bool:
    stamp = target / STAMP
    digest = hashlib.sha256(pins.read_bytes()).hexdigest()
    return stamp.exists() and stamp.read_text() == digest


def _mark(target: Path, pins: Path) -> None:
    (target / STAMP).write_text(hashlib.sha256(pins.read_bytes()).hexdigest())


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")


def old_analytics_python() -> Path:
    """A directory holding analytics-python 1.x and its pinned dependencies (PYTHONPATH)."""
    target = Path(sys.prefix) / "sdk" / "analytics-python-1"
    if not _installed(target, OLD_PYTHON):
        shutil.rmtree(target, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target"]
        _run([*pip, str(target), "-r", str(OLD_PYTHON)])
        _mark(target, OLD_PYTHON)
    return target


def node_modules() -> str:
    """The `node` executable, with the pinned Node libraries installed (`npm ci`). Without node
    and npm: skipped, or failed when PIER_REQUIRE_NODE=1 (CI, after .ci/install-node.sh)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed for the Node SDK tests (.ci/install-node.sh)"
        if os.environ.get("PIER_REQUIRE_NODE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    lock = NODE_DIR / "package-lock.json"
    if not _installed(NODE_DIR / "node_modules", lock):
        _run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=NODE_DIR)
        _mark(NODE_DIR / "node_modules", lock)
    return node
