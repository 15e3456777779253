"""Applying a decision's data-minimisation obligations to a form before it leaves.

Masking keeps the shape of a value (its length and a few characters at each end) so the
owner's clerk can still tell a phone number from an id number and match it to a document,
while the full value never crosses the wire. Consent and second approval are not applied
here: the engine already refuses when consent is required and absent, and second approval
is a workflow step of the caller.
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.model import Obligations

MASK = "*"


def apply_obligations(form: Mapping[str, object], obligations: Obligations) -> dict[str, object]:
    """A new form without the stripped keys and with masked values; the input is untouched."""
    return {
        name: mask_value(value) if name in obligations.mask else value
        for name, value in form.items()
        if name not in obligations.strip
    }


def mask_text(text: str) -> str:
    """``13812345678`` -> ``138****5678``; ``张三`` -> ``张*``; ``王小明`` -> ``王*明``.

    Eight characters or more keep three in front and four behind (phone, id numbers, bank
    cards, as printed on Chinese receipts); shorter values keep at most one at each end.
    """
    n = len(text)
    if n <= 1:
        return MASK * n
    if n == 2:
        return text[0] + MASK
    if n < 8:
        return text[0] + MASK * (n - 2) + text[-1]
    return text[:3] + MASK * (n - 7) + text[-4:]


def mask_value(value: object) -> object:
    """Mask every leaf; containers keep their keys and lengths, None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bool):
        return MASK
    if isinstance(value, int | float):
        return mask_text(str(value))
    if isinstance(value, Mapping):
        return {k: mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v) for v in value]
    return mask_text(str(value))
