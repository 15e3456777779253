"""Strict TOML reading shared by the node config, members.toml and catalogue files.

A table is consumed key by key so that whatever is left over is reported as an unknown key:
a typo silently falling back to a default is worse than refusing to start. Every error is a
:class:`ConfigError` whose ``field`` is the key path.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.division_table import DIVISIONS
from core.errors import ConfigError

NODE_ID_RE = re.compile(r"[a-z0-9-]{2,32}")


def check_node_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not NODE_ID_RE.fullmatch(value):
        raise ConfigError(f"node id must match [a-z0-9-]{{2,32}}, got {value!r}", field=where)
    return value


def check_division_code(value: object, where: str) -> str:
    """A full 6-digit GB/T 2260 code that names a real division."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{6}", value):
        raise ConfigError(f"expected a 6-digit GB/T 2260 code as a string, got {value!r}", field=where)
    if value not in DIVISIONS:
        raise ConfigError(f"{value} is not a known GB/T 2260 division code", field=where)
    return value


def check_host_port(value: object, where: str) -> str:
    """``host:port`` (IPv6 hosts in brackets); port 0 asks the OS for a free port."""
    if not isinstance(value, str):
        raise ConfigError(f"expected host:port as a string, got {value!r}", field=where)
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})", value)
    if not m or int(m.group(2)) > 65535:
        raise ConfigError(f"expected host:port with a port 0-65535, got {value!r}", field=where)
    return value


def check_http_url(value: object, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ConfigError(f"expected an http:// or https:// URL, got {value!r}", field=where)
    return value


class TomlTable:
    """A TOML table being consumed key by key, so leftovers can be reported as unknown."""

    def __init__(self, data: Mapping[str, Any], prefix: str) -> None:
        self._data = dict(data)
        self._prefix = prefix

    def path(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def take(
        self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False
    ) -> Any:
        if key not in self._data:
            if required:
                raise ConfigError("is required", field=self.path(key))
            return default
        value = self._data.pop(key)
        # bool is an int subclass; `max_batch = true` must not read as 1.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigError(f"expected {_kind_name(kind)}, got a boolean", field=self.path(key))
        if not isinstance(value, kind):
            raise ConfigError(
                f"expected {_kind_name(kind)}, got {type(value).__name__}", field=self.path(key)
            )
        return value

    def positive(
        self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False
    ) -> Any:
        value = self.take(key, kind, default, required=required)
        if value <= 0:
            raise ConfigError(f"must be greater than 0, got {value}", field=self.path(key))
        return value

    def subtable(self, key: str) -> TomlTable:
        return TomlTable(self.take(key, dict, {}), f"{self.path(key)}.")

    def tables(self, key: str, *, required: bool = False) -> list[TomlTable]:
        """An array of tables (``[[members]]``), each named ``key[i].`` in errors."""
        items = self.take(key, list, [], required=required)
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ConfigError(
                    f"expected a table, got {type(item).__name__}", field=f"{self.path(key)}[{i}]"
                )
            out.append(TomlTable(item, f"{self.path(key)}[{i}]."))
        return out

    def finish(self) -> None:
        if self._data:
            unknown = sorted(self._data)[0]
            raise ConfigError("unknown key (a typo?)", field=self.path(unknown))


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        dict: "a table",
        list: "an array",
        bool: "a boolean",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_toml(data: bytes, where: str, field: str) -> dict[str, Any]:
    """TOML bytes from ``where`` (a path, for the message); every way they can be wrong is a
    ConfigError naming ``field``: bad syntax, bytes that are not UTF-8, and nesting so deep
    that tomllib's recursive parser runs out of stack (it has no depth limit of its own)."""
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where} is not UTF-8 text (byte {e.start})", field=field) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}", field=field) from e
    except RecursionError as e:
        raise ConfigError(f"{where} is not valid TOML: arrays or tables nested too deep", field=field) from e


def load_toml(path: Path, field: str) -> dict[str, Any]:
    """Read a TOML file; a missing file or a syntax error names ``field`` and the file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", field=field) from e
    return parse_toml(data, str(path), field)
