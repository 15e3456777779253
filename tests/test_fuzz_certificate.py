"""Fuzzing e-certificate checks (the oracle: tests/fuzz/certificate.py; `make fuzz` runs it long)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from registry.certificates import to_text, verify
from tests.fuzz import FUZZ, MODES
from tests.fuzz.certificate import MANIFEST, NOW, SEED, SEED_BYTES, fuzz_one


@FUZZ
@given(st.binary(max_size=3000))
@example(b"")
@example(bytes([0]) + b"YRDC1:")
@example(bytes([1]) + b"\x00\x05\x41")  # one byte of the file form overwritten
@example(bytes([MODES + 1]) + b"\x00\x20\x41")  # one character of the QR text overwritten
@example(bytes([2]) + b"\x00\x00\x78\x01")  # an unknown field in front of the file form: still passes
@example(bytes([4]) + b"\x00\x10")  # the file cut short
def test_damaged_or_random_certificates_never_pass_and_never_crash(data: bytes) -> None:
    fuzz_one(data)


def test_the_seed_passes_in_both_forms() -> None:
    """Else the oracle above could never see a valid certificate, and would prove nothing."""
    assert verify(SEED_BYTES, MANIFEST, NOW).valid
    assert verify(to_text(SEED).lower(), MANIFEST, NOW).valid
