"""Sections 3.2, 3.3 and 14.1 of docs/protocol.md: a QueryData call that reaches a member which
may be the relay of the envelope's destination.

Written from the document alone: no node or registry code, no network. Given the receiver's
trusted manifest (as `ref_manifest` reads it), the receiver's node id and the envelope `I` that
arrived as `QueryDataRequest.envelope`, it says what the receiver does with the call: pass it on
to the holder, refuse it with a reason code and a gRPC status, or answer it itself as the
addressee. `predict_call` follows a forwarded call one hop further, to the holder's own 3.2
checks, since 14.1 has the relay return whatever the holder answered.

Where the document leaves a choice open, the choice is named in a comment and listed in
QUERY_RELAY_GAPS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.independent.primitives import SIGNATURE_BYTES, Rejected, ed25519_verify
from tests.independent.ref_manifest import REVOKED, Manifest, MemberKey
from tests.independent.ref_protocol import (
    NONCE_BYTES,
    Envelope,
    NonceStore,
    envelope_signing_input,
    verify_request,
)

QUERY_DATA = "/yrd.peer.v1.PeerService/QueryData"
DEFAULT_MAX_SKEW_MS = 30_000  # 3.2: "a maximum skew max_skew_ms (default 30 000)"
# 14.1: a relay refuses the call "UNAUTHENTICATED with its reason"; section 7 maps every
# envelope code of 3.2 to the same status.
UNAUTHENTICATED = "UNAUTHENTICATED"


@dataclass(frozen=True)
class Forward:
    """14.1: the receiver is `I.destination`'s relay and calls that member's QueryData with the
    same request, returning the holder's response envelope or gRPC status unchanged."""

    destination: str


@dataclass(frozen=True)
class Refuse:
    """The call fails here, with `code` in the `yrd-reason` trailer (7.1)."""

    code: str
    grpc_status: str = UNAUTHENTICATED


@dataclass(frozen=True)
class Addressee:
    """3.3 "destination" role: `I.destination` is the receiver itself, so the call is an ordinary
    request to it (14.1: "checked as every single-envelope call", i.e. all of 3.2)."""


Decision = Forward | Refuse | Addressee


@dataclass(frozen=True)
class Prediction:
    """What a caller of `receiver`'s QueryData observes.

    `answered_by` is the member whose own checks of the query decide the outcome (the receiver
    itself, or the holder behind it); `refusal` is set when an envelope check fails, at the
    receiver (`forwarded` False) or at the holder (`forwarded` True). With no refusal, the
    envelope passed every check and `answered_by` goes on to read the DataQuery body (14.1).
    """

    answered_by: str
    forwarded: bool
    refusal: Refuse | None


def _well_formed(inner: Envelope) -> bool:
    """3.2 step 1 (which 3.3 step 1 repeats): lengths, non-empty names, no in_reply_to."""
    lengths_ok = len(inner.nonce) == NONCE_BYTES and len(inner.signature) == SIGNATURE_BYTES
    names_ok = all((inner.sender, inner.key_id, inner.destination, inner.method))
    # 3.3 step 1: "including: in_reply_to is empty"; a signed response is not a request.
    return lengths_ok and names_ok and not inner.in_reply_to


def _sender_key(inner: Envelope, manifest: Manifest) -> MemberKey | Refuse:
    """3.3 steps 2-5 = 3.2 steps 2-5 for `I.sender`, `I.key_id` at `I.created_at_ms`."""
    member = manifest.member(inner.sender)
    if member is None:
        return Refuse("unknown_sender")  # 3.2 step 2
    # 3.2 step 3: a key of another member does not count, so only this member's keys are looked at.
    key = member.key(inner.key_id)
    if key is None:
        return Refuse("unknown_key")
    if key.status == REVOKED:
        return Refuse("key_revoked")  # 3.2 step 4; `retiring` passes (3.2 notes, 6.1)
    # 3.2 step 5, half-open window (section 1), against the signer's own created_at_ms: 3.3 has
    # "no clock-skew step", so the relay never compares the envelope with its clock.
    if not key.not_before_ms <= inner.created_at_ms < key.not_after_ms:
        return Refuse("key_not_valid")
    return key


def role(inner: Envelope, *, manifest: Manifest, receiver: str) -> str:
    """3.3 "Verifying a forwarded envelope": the role comes from `I.destination` and the manifest.

    "destination" whatever the manifest says about relays when addressed to the receiver;
    "relay" when the manifest names the receiver as the destination's relay; "neither" for a
    non-member, a member without a relay, one relayed by another member, and any destination
    when the receiver is itself relayed (6.3 rule 9 gives such a receiver no member to relay for,
    so the second test can never hold for it).
    """
    if inner.destination == receiver:
        return "destination"
    member = manifest.member(inner.destination)
    if member is not None and member.relay == receiver:
        return "relay"
    return "neither"


def relay_decision(
    inner: Envelope, *, manifest: Manifest, receiver: str, method_called: str = QUERY_DATA
) -> Decision:
    """What `receiver` does with `I` arriving on QueryData, before anything of the body is read.

    14.1 "A holder behind a relay": the receiver, "finding I addressed to another member, checks
    it as a relay checks a forwarded envelope (3.3 ...)"; "the first failing check refuses the
    call, UNAUTHENTICATED with its reason". The order is the 3.3 table's (form, key, role,
    method, signature); 14.1's parenthesis lists the same checks in another order (signature
    before method and role), read here as a summary, not an order (gap 1 of QUERY_RELAY_GAPS.md).
    An envelope addressed to the receiver itself is not a relaying matter at all: `Addressee`.
    """
    current = role(inner, manifest=manifest, receiver=receiver)
    if current == "destination":
        return Addressee()
    # 3.3 step 1: the form checks of 3.2 step 1.
    if not _well_formed(inner):
        return Refuse("malformed_envelope")
    # 3.3 steps 2-5.
    key = _sender_key(inner, manifest)
    if isinstance(key, Refuse):
        return key
    # 3.3 step 6: the receiver must be the relay (the destination role was handled above);
    # 14.1: "wrong_destination when X is not D's relay".
    if current != "relay":
        return Refuse("wrong_destination")
    # 3.3 step 7: I.method equals the method of the call; 14.1: "I.method QueryData".
    if inner.method != method_called:
        return Refuse("method_mismatch")
    # 3.3 step 8: the Ed25519 signature over signing_input(I) (3.1), body hashed as received.
    if not ed25519_verify(key.public_key, envelope_signing_input(inner), inner.signature):
        return Refuse("bad_signature")
    # 3.3: "There is no clock-skew step and no nonce step": I.nonce is neither looked up nor
    # recorded by the relay; the holder does both (14.1: "D checks I by 3.2 ... the time window
    # and nonce included"). 3.3 also says a relay does not parse I.body at all, so a body that
    # is not a DataQuery is the holder's to refuse (gap 4: 14.1 has the relay read resources and
    # purpose, without saying what it does with a body it cannot read).
    return Forward(inner.destination)


def addressee_decision(
    inner: Envelope,
    *,
    manifest: Manifest,
    receiver: str,
    now_ms: int,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    nonces: NonceStore | None = None,
    method_called: str = QUERY_DATA,
) -> Refuse | None:
    """14.1: the request envelope "is checked as every single-envelope call (signature,
    membership, key window, destination, time window, nonce)": the ten steps of 3.2, in their
    order. None when it passes (the DataQuery body is read next, and an answer or a body code
    follows). `nonces` stands for the receiver's store: pass the same store for calls to the same
    node; a fresh one means "no pair seen yet". The store is updated (step 10 records)."""
    try:
        verify_request(
            inner,
            manifest=manifest,
            receiver=receiver,
            method_called=method_called,
            now_ms=now_ms,
            max_skew_ms=max_skew_ms,
            nonces=nonces if nonces is not None else NonceStore(),
        )
    except Rejected as exc:
        return Refuse(exc.code)  # 3.2 notes, section 7: UNAUTHENTICATED
    return None


def predict_call(
    inner: Envelope,
    *,
    manifest: Manifest,
    receiver: str,
    now_ms: int,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    receiver_nonces: NonceStore | None = None,
    holder_nonces: NonceStore | None = None,
) -> Prediction:
    """The whole call as a caller sees it, when every member shares the receiver's manifest.

    A forwarded call is decided by the holder: 14.1 "X returns D's response envelope unchanged,
    or D's gRPC status with its details and yrd-reason trailer". The holder has no relay hop left
    (6.3 rule 9: a relay has no relay of its own), so `I` is simply addressed to it there.
    """
    decision = relay_decision(inner, manifest=manifest, receiver=receiver)
    if isinstance(decision, Refuse):
        return Prediction(answered_by=receiver, forwarded=False, refusal=decision)
    forwarded = not isinstance(decision, Addressee)
    answered_by = decision.destination if isinstance(decision, Forward) else receiver
    refusal = addressee_decision(
        inner,
        manifest=manifest,
        receiver=answered_by,
        now_ms=now_ms,
        max_skew_ms=max_skew_ms,
        nonces=holder_nonces if forwarded else receiver_nonces,
    )
    return Prediction(answered_by=answered_by, forwarded=forwarded, refusal=refusal)
