"""The arrows between packages run one way (pyproject.toml's import-linter contracts): core
imports nothing of ours, registry/ and policies/ never import node/, node/ never imports
simulations/, and inside node/ the doors sit over cases, delivery and trust in that order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
