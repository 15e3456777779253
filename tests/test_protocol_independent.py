"""Every vector of docs/protocol-vectors.json through the implementation written from docs/protocol.md.

The implementation in tests/independent/ shares no code with node/ or registry/, so a pass here
means the document alone is enough to interoperate; a failure names the vector that disagrees.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from nacl import bindings
from nacl.exceptions import CryptoError

from tests.independent import edwards
from tests.independent.primitives import GRPC_STATUS, Rejected, key_id_for, public_key_for
from tests.independent.ref_cases import check_transfer, owner_of, read_transfer, signing_key_id
from tests.independent.ref_json import NotJsonText, read_json_text
from tests.independent.ref_manifest import (
    MANIFEST_DOMAIN,
    Manifest,
    fingerprint,
    manifest_signing_input,
    parse_manifest,
    parse_signed_manifest,
    verify_anchor,
    verify_successor,
)
from tests.independent.ref_protocol import (
    ENVELOPE_DOMAIN,
    FORWARDED_CODES,
    Envelope,
    NonceStore,
    box_nonce,
    envelope_digest,
    envelope_signing_input,
    open_sealed,
    read_forwarded_item,
    relay_item_id,
    seal_with_ephemeral,
    sign_envelope,
    verify_forwarded,
    verify_request,
    verify_response,
    x25519_secret_from_seed,
)
from tests.independent.ref_receipt_runs import NOT_SETTLED, USABLE, take_receipt
from tests.independent.ref_status import Origin, apply_status_item

DOCS = Path(__file__).resolve().parents[1] / "docs"
VECTORS: dict[str, Any] = json.loads((DOCS / "protocol-vectors.json").read_text(encoding="utf-8"))

# What this file knows how to run: kind -> the fields a case of that kind may carry. A kind or a
# field the generator adds later fails test_every_vector_kind_is_handled until it is handled here.
HANDLED_KINDS = {
    "keys": {"name", "seed", "public_key", "key_id", "x25519_public_key", "x25519_secret_key"},
    "envelopes.requests": {
        "name", "envelope", "signing_input", "digest", "method_called", "now_ms", "seen_nonces", "expect",
    },
    "envelopes.responses": {"name", "envelope", "signing_input", "digest", "expect"},
    "forwarded": {
        "name", "envelope", "signing_input", "digest", "receiver", "method_called", "wrapped_body",
        "relay_item_id", "expect",
    },
    "applications": {"name", "sender", "transfer", "form_fields", "expect"},
    "status": {"name", "sender", "known", "item", "expect", "item_id", "applied", "shows"},
    "receipt_runs": {"name", "sender", "known", "receipt", "expect", "applied", "shows"},
    "json_text": {"name", "text", "expect"},
    "routing": {"name", "division_code", "expect"},
    "signing_keys": {"name", "node_id", "at_ms", "expect"},
    "certificates": {"name", "form", "input", "now_ms", "expect"},
    "sealed.valid": {
        "name", "recipient_seed", "recipient_x25519_public_key", "ephemeral_secret_key",
        "ephemeral_public_key", "box_nonce", "plaintext", "sealed",
    },
    "sealed.invalid": {"name", "recipient_seed", "sealed", "expect"},
    "manifests.signed": {
        "name", "manifest", "summary", "signing_input", "fingerprint", "signatures", "signed_manifest",
    },
    "manifests.anchors": {"signed_manifest", "expect"},
    "manifests.successors": {"current", "candidate", "now_ms", "expect"},
}  # fmt: skip
HANDLED_PARAMETERS = {
    "envelopes": {"manifest", "max_skew_ms"},
    "envelopes.requests": {"receiver"},
    "envelopes.responses": {"receiver", "request", "now_ms"},
    "forwarded": {"manifest", "now_ms"},
    "applications": {"owner", "services", "now_ms", "max_skew_ms", "max_age_ms", "max_ahead_ms"},
    "status": {"origin", "application_id", "owner"},
    "receipt_runs": {"origin", "application_id", "owner"},
    "routing": {"manifest"},
    "signing_keys": {"manifest"},
    "certificates": {"keys", "signed_manifest", "example"},  # run in tests/test_independent_certificates.py
}
ENVELOPE_FIELDS = {
    "sender", "key_id", "destination", "method", "created_at_ms", "nonce", "body", "in_reply_to", "signature",
}  # fmt: skip
STATUS_NAMES = {1: "active", 2: "retiring", 3: "revoked"}


def vector_kinds(doc: dict[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, set[str]]]:
    """Split the file into case lists per kind and the scalar parameters found next to them."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    parameters: dict[str, set[str]] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            kind = f"{prefix}.{key}" if prefix else key
            if isinstance(value, list):
                kinds[kind] = value
            elif isinstance(value, dict) and "cases" in value:
                kinds[kind] = value["cases"]
                parameters[kind] = set(value) - {"cases"}
            elif isinstance(value, dict):
                walk(kind, value)
            elif prefix:
                parameters.setdefault(prefix, set()).add(key)

    walk("", {key: value for key, value in doc.items() if key != "about"})
    return kinds, parameters


KINDS, PARAMETERS = vector_kinds(VECTORS)


def cases(kind: str) -> list[Any]:
    return [pytest.param(case, id=case.get("name", str(index))) for index, case in enumerate(KINDS[kind])]


def unhex(value: str) -> bytes:
    return bytes.fromhex(value)


def envelope_from(fields: dict[str, Any]) -> Envelope:
    assert set(fields) == ENVELOPE_FIELDS
    return Envelope(
        sender=fields["sender"],
        key_id=fields["key_id"],
        destination=fields["destination"],
        method=fields["method"],
        created_at_ms=fields["created_at_ms"],
        nonce=unhex(fields["nonce"]),
        body=unhex(fields["body"]),
        in_reply_to=unhex(fields["in_reply_to"]),
        signature=unhex(fields["signature"]),
    )


@functools.cache
def seed_for_key_id() -> dict[str, bytes]:
    return {key_id_for(public_key_for(unhex(key["seed"]))): unhex(key["seed"]) for key in KINDS["keys"]}


@functools.cache
def signed_manifest_bytes(name: str) -> bytes:
    return unhex(next(m["signed_manifest"] for m in KINDS["manifests.signed"] if m["name"] == name))


def outcome(check: Any) -> str:
    try:
        check()
    except Rejected as rejected:
        return rejected.code
    return "valid"


@functools.cache
def trusted(name: str) -> Manifest:
    return verify_anchor(signed_manifest_bytes(name))


def check_envelope_bytes(case: dict[str, Any]) -> Envelope:
    env = envelope_from(case["envelope"])
    assert envelope_signing_input(env).hex() == case["signing_input"]
    assert envelope_digest(env).hex() == case["digest"]
    if case["expect"] == "valid":
        assert sign_envelope(env, seed_for_key_id()[env.key_id]) == env.signature
    else:
        assert GRPC_STATUS[case["expect"]] == "UNAUTHENTICATED"
    return env


def test_every_vector_kind_is_handled() -> None:
    assert set(KINDS) == set(HANDLED_KINDS)
    assert PARAMETERS == HANDLED_PARAMETERS
    for kind, kind_cases in KINDS.items():
        assert kind_cases, kind
        for case in kind_cases:
            assert set(case) == HANDLED_KINDS[kind], (kind, case.get("name"))


@pytest.mark.parametrize("case", cases("keys"))
def test_key(case: dict[str, Any]) -> None:
    seed, public_key = unhex(case["seed"]), unhex(case["public_key"])
    assert public_key_for(seed) == public_key
    assert key_id_for(public_key) == case["key_id"]
    assert edwards.x25519_public_from_ed25519(public_key) == unhex(case["x25519_public_key"])
    assert bytes(bindings.crypto_sign_ed25519_pk_to_curve25519(public_key)) == unhex(
        case["x25519_public_key"]
    )
    assert x25519_secret_from_seed(seed) == unhex(case["x25519_secret_key"])
    assert bytes(bindings.crypto_sign_ed25519_sk_to_curve25519(seed + public_key)) == unhex(
        case["x25519_secret_key"]
    )


@pytest.mark.parametrize("case", cases("envelopes.requests"))
def test_request(case: dict[str, Any]) -> None:
    env = check_envelope_bytes(case)
    section = VECTORS["envelopes"]
    nonces = NonceStore((seen["sender"], unhex(seen["nonce"])) for seen in case["seen_nonces"])
    result = outcome(
        lambda: verify_request(
            env,
            manifest=trusted(VECTORS["envelopes"]["manifest"]),
            receiver=section["requests"]["receiver"],
            method_called=case["method_called"],
            now_ms=case["now_ms"],
            max_skew_ms=section["max_skew_ms"],
            nonces=nonces,
        )
    )
    assert result == case["expect"]


@pytest.mark.parametrize("case", cases("envelopes.responses"))
def test_response(case: dict[str, Any]) -> None:
    resp = check_envelope_bytes(case)
    section = VECTORS["envelopes"]
    request_case = next(
        c for c in KINDS["envelopes.requests"] if c["name"] == section["responses"]["request"]
    )
    result = outcome(
        lambda: verify_response(
            resp,
            request=envelope_from(request_case["envelope"]),
            manifest=trusted(VECTORS["envelopes"]["manifest"]),
            receiver=section["responses"]["receiver"],
            now_ms=section["responses"]["now_ms"],
            max_skew_ms=section["max_skew_ms"],
        )
    )
    assert result == case["expect"]


@pytest.mark.parametrize("case", cases("forwarded"))
def test_forwarded(case: dict[str, Any]) -> None:
    inner = envelope_from(case["envelope"])
    assert envelope_signing_input(inner).hex() == case["signing_input"]
    assert envelope_digest(inner).hex() == case["digest"]
    # 3.3: the relay carries I with every field unchanged, as field 2 of the item.
    assert read_forwarded_item(unhex(case["wrapped_body"])) == inner
    result = outcome(
        lambda: verify_forwarded(
            inner,
            manifest=trusted(VECTORS["forwarded"]["manifest"]),
            receiver=case["receiver"],
            method_called=case["method_called"],
        )
    )
    assert result == case["expect"]
    assert case["relay_item_id"] == relay_item_id(inner)
    assert case["expect"] == "valid" or case["expect"] in FORWARDED_CODES
    if case["expect"] == "valid":
        assert sign_envelope(inner, seed_for_key_id()[inner.key_id]) == inner.signature
        # The case would fail 3.2 step 8, so it shows that 3.3 has no skew step.
        assert VECTORS["forwarded"]["now_ms"] - inner.created_at_ms > VECTORS["envelopes"]["max_skew_ms"]


@pytest.mark.parametrize("case", cases("applications"))
def test_application(case: dict[str, Any]) -> None:
    section = VECTORS["applications"]
    transfer = read_transfer(unhex(case["transfer"]))
    result = outcome(
        lambda: check_transfer(
            transfer,
            sender=case["sender"],
            services=section["services"],
            now_ms=section["now_ms"],
            max_skew_ms=section["max_skew_ms"],
            max_age_ms=section["max_age_ms"],
            max_ahead_ms=section["max_ahead_ms"],
            form_fields=case["form_fields"],
        )
    )
    assert result == case["expect"]
    assert result == "valid" or GRPC_STATUS[result] == "RECEIPT"
    # Section 9: the case `status-on-receipt` sets 10.1 field 10, which the checks ignore.
    assert transfer.status_on_receipt == (case["name"] == "status-on-receipt")


@pytest.mark.parametrize("case", cases("status"))
def test_status(case: dict[str, Any]) -> None:
    section = VECTORS["status"]
    origin = Origin(section["application_id"], section["owner"], set(case["known"]))
    result, item_id, applied = apply_status_item(origin, unhex(case["item"]), case["sender"])
    assert (result, item_id, applied, origin.shows()) == (
        case["expect"],
        case["item_id"],
        case["applied"],
        case["shows"],
    )
    assert result in ("accepted", "duplicate") or GRPC_STATUS[result] == "RECEIPT"


@pytest.mark.parametrize("case", cases("receipt_runs"))
def test_receipt_run(case: dict[str, Any]) -> None:
    section = VECTORS["receipt_runs"]
    origin = Origin(section["application_id"], section["owner"], set(case["known"]))
    result, applied = take_receipt(origin, unhex(case["receipt"]), case["sender"])
    assert (result, applied, origin.shows()) == (case["expect"], case["applied"], case["shows"])
    if result != USABLE:
        # 10.6: an unusable receipt is no receipt, and one that settles nothing is read no
        # further; nothing of either is recorded.
        assert result == NOT_SETTLED or GRPC_STATUS[result] == "RECEIPT"
        assert origin.recorded == set(case["known"])


@pytest.mark.parametrize("case", cases("json_text"))
def test_json_text(case: dict[str, Any]) -> None:
    try:
        read_json_text(unhex(case["text"]))
    except NotJsonText:
        result = "invalid"
    else:
        result = "valid"
    assert result == case["expect"]


@pytest.mark.parametrize("case", cases("routing"))
def test_routing(case: dict[str, Any]) -> None:
    manifest = trusted(VECTORS["routing"]["manifest"])
    result = outcome(lambda: owner_of(manifest, case["division_code"]))
    assert (owner_of(manifest, case["division_code"]) if result == "valid" else result) == case["expect"]


@pytest.mark.parametrize("case", cases("signing_keys"))
def test_signing_key(case: dict[str, Any]) -> None:
    manifest = trusted(VECTORS["signing_keys"]["manifest"])
    result = outcome(lambda: signing_key_id(manifest, case["node_id"], case["at_ms"]))
    if result == "valid":
        result = signing_key_id(manifest, case["node_id"], case["at_ms"])
    assert result == case["expect"]


@pytest.mark.parametrize("case", cases("sealed.valid"))
def test_sealed_valid(case: dict[str, Any]) -> None:
    seed = unhex(case["recipient_seed"])
    recipient = unhex(case["recipient_x25519_public_key"])
    ephemeral_secret, ephemeral_public = (
        unhex(case["ephemeral_secret_key"]),
        unhex(case["ephemeral_public_key"]),
    )
    sealed, plaintext = unhex(case["sealed"]), unhex(case["plaintext"])
    assert edwards.x25519_public_from_ed25519(public_key_for(seed)) == recipient
    assert bytes(bindings.crypto_scalarmult_base(ephemeral_secret)) == ephemeral_public
    assert box_nonce(ephemeral_public, recipient) == unhex(case["box_nonce"])
    assert seal_with_ephemeral(plaintext, recipient, ephemeral_secret) == sealed
    assert len(sealed) == 48 + len(plaintext)
    assert open_sealed(sealed, seed) == plaintext
    # 5.2 says this is libsodium's crypto_box_seal: its own opener must agree.
    assert bindings.crypto_box_seal_open(sealed, recipient, x25519_secret_from_seed(seed)) == plaintext


@pytest.mark.parametrize("case", cases("sealed.invalid"))
def test_sealed_invalid(case: dict[str, Any]) -> None:
    seed, sealed = unhex(case["recipient_seed"]), unhex(case["sealed"])
    assert GRPC_STATUS[case["expect"]] == "RECEIPT"
    assert outcome(lambda: open_sealed(sealed, seed)) == case["expect"]
    recipient = edwards.x25519_public_from_ed25519(public_key_for(seed))
    assert recipient is not None
    with pytest.raises(CryptoError):
        bindings.crypto_box_seal_open(sealed, recipient, x25519_secret_from_seed(seed))


def summary_of(m: Manifest) -> dict[str, Any]:
    """The manifest in the shape of a vector's `summary`, to check the hand-written wire reader."""
    return {
        "federation_id": m.federation_id,
        "version": m.version,
        "threshold": m.threshold,
        "issued_at_ms": m.issued_at_ms,
        "expires_at_ms": m.expires_at_ms,
        "members": [
            {
                "node_id": member.node_id,
                "jurisdictions": list(member.jurisdictions),
                "relay": member.relay,
                "keys": [
                    {
                        "key_id": key.key_id,
                        "public_key": key.public_key.hex(),
                        "not_before_ms": key.not_before_ms,
                        "not_after_ms": key.not_after_ms,
                        "status": STATUS_NAMES.get(key.status, f"unspecified({key.status})"),
                    }
                    for key in member.keys
                ],
            }
            for member in m.members
        ],
    }


@pytest.mark.parametrize("case", cases("manifests.signed"))
def test_signed_manifest(case: dict[str, Any]) -> None:
    signed = parse_signed_manifest(unhex(case["signed_manifest"]))
    assert signed.manifest.hex() == case["manifest"]
    carried = [
        {"node_id": sig.node_id, "key_id": sig.key_id, "signature": sig.signature.hex()}
        for sig in signed.signatures
    ]
    assert carried == case["signatures"]
    assert manifest_signing_input(signed.manifest).hex() == case["signing_input"]
    assert fingerprint(signed.manifest) == case["fingerprint"]
    if isinstance(case["summary"], dict):
        assert summary_of(parse_manifest(signed.manifest)) == case["summary"]
    else:
        assert outcome(lambda: parse_manifest(signed.manifest)) == "malformed_manifest"


@pytest.mark.parametrize("case", cases("manifests.anchors"))
def test_anchor(case: dict[str, Any]) -> None:
    if case["expect"] != "valid":
        assert GRPC_STATUS[case["expect"]] == "FAILED_PRECONDITION"
    assert outcome(lambda: verify_anchor(signed_manifest_bytes(case["signed_manifest"]))) == case["expect"]


@pytest.mark.parametrize("case", cases("manifests.successors"))
def test_successor(case: dict[str, Any]) -> None:
    if case["expect"] != "valid":
        assert GRPC_STATUS[case["expect"]] == "FAILED_PRECONDITION"
    current = trusted(case["current"])
    candidate = signed_manifest_bytes(case["candidate"])
    assert outcome(lambda: verify_successor(current, candidate, case["now_ms"])) == case["expect"]


def test_document_examples_agree_with_the_vectors() -> None:
    """The bytes printed in docs/protocol.md itself, not only the JSON, must be right."""
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    assert "79 72 64 2d 65 6e 76 65 6c 6f 70 65 2d 76 31 00" in text
    assert ENVELOPE_DOMAIN.hex(" ") in text
    assert MANIFEST_DOMAIN.hex(" ") in text
    name = "empty-body-at-past-skew-limit"
    block = re.search(rf"Worked example, vector `{name}` \((\d+) bytes\):\s*```\n(.*?)```", text, re.S)
    assert block is not None
    worked = "".join(
        "".join(re.match(r"\s*((?:[0-9a-f]+ ?)*)", line).group(1).split())  # type: ignore[union-attr]
        for line in block.group(2).splitlines()
    )
    case = next(c for c in KINDS["envelopes.requests"] if c["name"] == name)
    assert worked == case["signing_input"]
    assert len(worked) // 2 == int(block.group(1))
    fingerprint_example = re.search(r"e\.g\. `((?:[0-9a-f]{4} ){15}[0-9a-f]{4})`", text)
    assert fingerprint_example is not None
    assert fingerprint_example.group(1) in {m["fingerprint"] for m in KINDS["manifests.signed"]}
    key_id_example = re.search(r"e\.g\. `(k-[0-9a-f]{16})`", text)
    assert key_id_example is not None
    assert key_id_example.group(1) in seed_for_key_id()
