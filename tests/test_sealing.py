"""Sealed payloads: only the recipient opens them, and any change is detected."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yrd.peer.v1.peer_pb2 import ApplicationPayload, Attachment

from core.errors import InvalidInput
from core.keys import NodeKey
from node.trust import sealing
from node.trust.sealing import SEAL_OVERHEAD, seal, unseal

OWNER = NodeKey.from_seed(hashlib.sha256(b"owner").digest())
RELAY = NodeKey.from_seed(hashlib.sha256(b"relay").digest())


def test_application_payload_round_trip() -> None:
    payload = ApplicationPayload(
        applicant_name="李四",
        applicant_id_number="110101190001010000",
        form_json=b'{"a":1}',
        attachments=[
            Attachment(material="m", filename="f.pdf", content_type="application/pdf", data=b"%PDF")
        ],
    )
    sealed = seal(OWNER.public_key, payload.SerializeToString())
    assert len(sealed) == SEAL_OVERHEAD + payload.ByteSize()
    assert ApplicationPayload.FromString(unseal(OWNER, sealed)) == payload


def test_each_seal_uses_a_fresh_ephemeral_key() -> None:
    a, b = seal(OWNER.public_key, b"same"), seal(OWNER.public_key, b"same")
    assert a[:32] != b[:32] and a != b


def test_a_relay_cannot_open_what_was_sealed_to_the_owner() -> None:
    with pytest.raises(InvalidInput) as err:
        unseal(RELAY, seal(OWNER.public_key, b"personal data"))
    assert err.value.code == "sealed_payload_invalid"


@pytest.mark.parametrize("sealed", [b"", b"\x00" * (SEAL_OVERHEAD - 1)])
def test_too_short(sealed: bytes) -> None:
    with pytest.raises(InvalidInput, match="sealed_payload_invalid"):
        unseal(OWNER, sealed)


@pytest.mark.parametrize("key", [b"\x01" * 31, b"\x02" + bytes(31)])
def test_unusable_recipient_key(key: bytes) -> None:
    with pytest.raises(InvalidInput, match="recipient_key_invalid"):
        seal(key, b"x")


def test_a_recipient_key_is_converted_once_and_a_refused_one_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    convert = sealing.crypto_sign_ed25519_pk_to_curve25519

    def counted(key: bytes) -> bytes:
        calls.append(key)
        return bytes(convert(key))

    sealing.x25519_public_key.cache_clear()
    monkeypatch.setattr(sealing, "crypto_sign_ed25519_pk_to_curve25519", counted)
    for _ in range(3):
        assert unseal(OWNER, seal(OWNER.public_key, b"x")) == b"x"
    assert calls == [OWNER.public_key]
    for _ in range(2):
        with pytest.raises(InvalidInput, match="recipient_key_invalid"):
            seal(b"\x02" + bytes(31), b"x")
    assert len(calls) == 3


@settings(max_examples=80)
@given(st.binary(max_size=64), st.data())
def test_any_flipped_bit_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    sealed = seal(OWNER.public_key, plaintext)
    assert unseal(OWNER, sealed) == plaintext
    i = data.draw(st.integers(0, len(sealed) - 1))
    bit = data.draw(st.integers(0, 7))
    broken = sealed[:i] + bytes([sealed[i] ^ (1 << bit)]) + sealed[i + 1 :]
    with pytest.raises(InvalidInput, match="sealed_payload_invalid"):
        unseal(OWNER, broken)
