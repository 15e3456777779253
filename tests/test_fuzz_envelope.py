"""Fuzzing the envelope verifier (tests/fuzz/envelope.py holds the oracle; `make fuzz` runs it long)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st
from yrd.envelope.v1.envelope_pb2 import Envelope

from core.errors import ENVELOPE_REASONS
from tests.fuzz import FUZZ, MODES
from tests.fuzz.envelope import DELIVER, KEYS, ME, NOW, SEEDS, check_request, fuzz_one, outcome, seal

INT64 = st.integers(-(2**63), 2**63 - 1)
NAMES = st.sampled_from(["node-a", "node-b", "node-c", "", "node-a\x00", "NODE-A"]) | st.text(max_size=40)
METHODS = st.sampled_from([DELIVER, "/yrd.peer.v1.PeerService/NotifyStatus", ""]) | st.text(max_size=60)
KEY_IDS = st.sampled_from([k.key_id for k in KEYS.values()]) | st.text(max_size=40)
NONCES = st.binary(min_size=16, max_size=16) | st.binary(max_size=40)


@FUZZ
@given(st.binary(max_size=600))
@example(b"")
@example(bytes([0]) + b"\xff" * 12)
@example(bytes([1]) + b"\x00\x05\x41")  # one byte of the request seed's signed fields overwritten
@example(bytes([MODES + 2]) + b"\x00\x00\x78\x01")  # an unknown field in front: still passes
def test_damaged_or_random_bytes_never_pass_and_never_crash(data: bytes) -> None:
    fuzz_one(data)


def test_every_seed_is_accepted_untouched() -> None:
    """The oracle's positive side: without it every refusal would pass vacuously."""
    assert [outcome(check, seed) for check, seed in SEEDS] == [None] * len(SEEDS)


@FUZZ
@given(
    sender=NAMES,
    key_id=KEY_IDS,
    destination=NAMES,
    method=METHODS,
    created_at_ms=INT64,
    nonce=NONCES,
    body=st.binary(max_size=64),
    signature=st.binary(min_size=64, max_size=64) | st.binary(max_size=80),
    in_reply_to=st.binary(max_size=40),
)
def test_invented_envelopes_are_refused_with_a_known_reason(**fields: object) -> None:
    """Nobody without a member's key can make an envelope pass, whatever the fields hold."""
    for check, _ in SEEDS:
        assert outcome(check, Envelope(**fields)) in ENVELOPE_REASONS  # type: ignore[arg-type]


@FUZZ
@given(
    key=st.sampled_from(sorted(KEYS)),
    destination=NAMES,
    method=METHODS,
    skew=st.integers(-40_000, 40_000) | INT64.map(lambda t: t - NOW) | st.just(0),
    nonce=NONCES,
    in_reply_to=st.just(b"") | st.binary(max_size=33),
)
def test_signed_envelopes_pass_exactly_when_every_rule_holds(
    key: str, destination: str, method: str, skew: int, nonce: bytes, in_reply_to: bytes
) -> None:
    """Envelopes correctly signed by a member's key, fields arbitrary: the verifier accepts
    exactly those the protocol allows and names a known reason for the rest."""
    created = max(-(2**63), min(2**63 - 1, NOW + skew))
    env = seal(
        key, destination=destination, method=method, now_ms=created, nonce=nonce, in_reply_to=in_reply_to
    )
    allowed = (
        key != "ar"  # the revoked one; any member may sign, itself included
        and len(nonce) == 16
        and not in_reply_to
        and destination == ME
        and method == DELIVER
        and abs(created - NOW) <= 30_000
    )
    code = outcome(check_request, env)
    assert (code is None) == allowed, code
