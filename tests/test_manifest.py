"""The federation manifest: form, quorum, rollback, chains of versions, and the key directory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yrd.federation.v1 import manifest_pb2 as mpb

from core.errors import ConfigError, EnvelopeRejected, ManifestRejected, NotFound
from core.keys import NodeKey
from registry.manifest import (
    TrustedManifest,
    check_form,
    fingerprint,
    load_signed_manifest,
    save_signed_manifest,
    sign_manifest,
    verify_anchor,
    verify_successor,
)

T0 = 1_767_225_600_000
DAY = 86_400_000
ACTIVE, RETIRING, REVOKED = mpb.KEY_STATUS_ACTIVE, mpb.KEY_STATUS_RETIRING, mpb.KEY_STATUS_REVOKED
KEYS = {
    n: NodeKey.from_seed(hashlib.sha256(n.encode()).digest()) for n in ("sh", "sh2", "js", "zj", "ah", "x")
}
PROVINCE = {"sh": "31", "js": "32", "zj": "33", "ah": "34", "x": "35"}


def key(name: str, nb: int = T0 - DAY, na: int = T0 + 365 * DAY, status: int = ACTIVE) -> mpb.MemberKey:
    k = KEYS[name]
    return mpb.MemberKey(
        key_id=k.key_id, public_key=k.public_key, not_before_ms=nb, not_after_ms=na, status=status
    )


def member(node: str, *keys: mpb.MemberKey, juris: tuple[str, ...] = (), relay: str = "") -> mpb.Member:
    return mpb.Member(
        node_id=node, jurisdictions=juris or (PROVINCE[node],), keys=keys or (key(node),), relay=relay
    )


def manifest(version: int, threshold: int, *members: mpb.Member, **over: object) -> mpb.Manifest:
    fields: dict[str, object] = {
        "federation_id": "yrd",
        "version": version,
        "threshold": threshold,
        "issued_at_ms": T0 + version * DAY,
        "expires_at_ms": T0 + 90 * DAY,
        "members": members,
    }
    fields.update(over)
    return mpb.Manifest(**fields)  # type: ignore[arg-type]


def signed(m: mpb.Manifest, *signers: str) -> mpb.SignedManifest:
    """Signers are key names; a key name is also its member's node id unless it ends in a digit."""
    out = mpb.SignedManifest(manifest=m.SerializeToString())
    for name in signers:
        out = sign_manifest(out, name.rstrip("0123456789"), KEYS[name])
    return out


V1 = manifest(1, 2, member("sh"), member("js"), member("zj"))


def test_anchor_with_quorum_is_trusted() -> None:
    trusted = verify_anchor(signed(V1, "sh", "js"))
    assert trusted.manifest == V1
    assert [m.node_id for m in trusted.members] == ["sh", "js", "zj"]
    assert trusted.member("zj") == V1.members[2] and trusted.member("nobody") is None


@pytest.mark.parametrize(
    "sign",
    [
        lambda: signed(V1, "sh"),
        lambda: signed(V1, "sh", "x"),  # not a member
        lambda: signed(
            manifest(1, 2, member("sh"), member("js", key("js", status=REVOKED)), member("zj")), "sh", "js"
        ),
        lambda: signed(
            manifest(1, 2, member("sh"), member("js", key("js", nb=T0 + 2 * DAY)), member("zj")), "sh", "js"
        ),
        lambda: signed(
            manifest(1, 2, member("sh"), member("js", key("js", na=T0 + DAY)), member("zj")), "sh", "js"
        ),
    ],
    ids=["one-signature", "outsider", "revoked-key", "key-not-yet-valid", "key-expired-at-issue"],
)
def test_anchor_below_quorum(sign: Callable[[], mpb.SignedManifest]) -> None:
    with pytest.raises(ManifestRejected) as err:
        verify_anchor(sign())
    assert err.value.code == "no_quorum"


def test_a_node_counts_once_and_bad_signatures_do_not_count() -> None:
    s = signed(V1, "sh")
    s.signatures.append(s.signatures[0])
    with pytest.raises(ManifestRejected, match="no_quorum"):
        verify_anchor(s)
    s = signed(V1, "sh", "js")
    s.signatures[1].signature = bytes(64)
    with pytest.raises(ManifestRejected, match="no_quorum"):
        verify_anchor(s)
    s.signatures[1].signature = b"short"
    with pytest.raises(ManifestRejected, match="no_quorum"):
        verify_anchor(s)


def test_sign_manifest_replaces_only_the_same_key() -> None:
    m = manifest(1, 1, member("sh", key("sh"), key("sh2")))
    s = signed(m, "sh", "sh2", "sh")
    assert [x.key_id for x in s.signatures] == [KEYS["sh2"].key_id, KEYS["sh"].key_id]
    assert {x.node_id for x in s.signatures} == {"sh"}


@settings(max_examples=30)
@given(st.integers(1, 4), st.sets(st.sampled_from(["sh", "js", "zj", "ah"])))
def test_valid_exactly_when_enough_members_signed(threshold: int, signers: set[str]) -> None:
    m = manifest(1, threshold, member("sh"), member("js"), member("zj"), member("ah"))
    s = signed(m, *sorted(signers))
    if len(signers) >= threshold:
        assert verify_anchor(s).manifest == m
    else:
        with pytest.raises(ManifestRejected, match="no_quorum"):
            verify_anchor(s)


def test_fingerprint_is_grouped_sha256() -> None:
    body = V1.SerializeToString()
    fp = fingerprint(body)
    assert fp.replace(" ", "") == hashlib.sha256(body).hexdigest()
    assert len(fp.split(" ")) == 16 and all(len(g) == 4 for g in fp.split(" "))
    assert verify_anchor(signed(V1, "sh", "js")).fingerprint == fp


def bad_key_id() -> mpb.Member:
    m = member("zj")
    m.keys[0].key_id = KEYS["sh"].key_id
    return m


J0, K00 = "members[0].jurisdictions", "members[0].keys[0]"
MALFORMED = {
    "threshold-zero": (manifest(1, 0, member("sh")), "threshold"),
    "threshold-above-members": (manifest(1, 2, member("sh")), "threshold"),
    "no-federation-id": (manifest(1, 1, member("sh"), federation_id=""), "federation_id"),
    "expires-before-issue": (manifest(1, 1, member("sh"), expires_at_ms=T0 + DAY), "expires_at_ms"),
    "duplicate-node": (manifest(1, 1, member("sh"), member("sh", juris=("35",))), "members[1]"),
    "empty-node-id": (
        manifest(1, 1, member("sh"), mpb.Member(node_id="", jurisdictions=["35"])),
        "members[1]",
    ),
    "not-a-province": (manifest(1, 1, member("sh", juris=("99",))), J0),
    "one-digit": (manifest(1, 1, member("sh", juris=("3",))), J0),
    "odd-length": (manifest(1, 1, member("sh", juris=("320",))), J0),
    "eight-digits": (manifest(1, 1, member("sh", juris=("32050101",))), J0),
    "not-digits": (manifest(1, 1, member("sh", juris=("3a",))), J0),
    "fullwidth-digits": (manifest(1, 1, member("sh", juris=("３２",))), J0),
    "prefix-claimed-twice": (
        manifest(1, 1, member("sh"), member("js", juris=("31",))),
        "members[1].jurisdictions",
    ),
    "key-id-mismatch": (manifest(1, 1, member("sh"), bad_key_id()), "members[1].keys[0]"),
    "short-key": (
        manifest(1, 1, member("sh", mpb.MemberKey(key_id="k-0", public_key=b"x", not_after_ms=1))),
        K00,
    ),
    "empty-key-window": (manifest(1, 1, member("sh", key("sh", nb=T0, na=T0))), K00),
    "status-unspecified": (manifest(1, 1, member("sh", key("sh", status=mpb.KEY_STATUS_UNSPECIFIED))), K00),
    "key-listed-twice": (manifest(1, 1, member("sh", key("sh"), key("sh"))), "members[0].keys[1]"),
    "key-shared-by-two-members": (
        manifest(1, 1, member("sh"), member("js", key("sh"))),
        "members[1].keys[0]",
    ),
    "relay-self": (manifest(1, 1, member("sh", relay="sh")), "members[0].relay"),
    "relay-not-member": (manifest(1, 1, member("sh"), member("js", relay="nobody")), "members[1].relay"),
    "relay-chain": (manifest(1, 1, member("sh", relay="js"), member("js", relay="sh")), "members[0].relay"),
}


@pytest.mark.parametrize(("m", "field"), MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_manifests(m: mpb.Manifest, field: str) -> None:
    with pytest.raises(ManifestRejected) as err:
        check_form(m)
    assert (err.value.code, err.value.field) == ("malformed_manifest", field)
    with pytest.raises(ManifestRejected, match="malformed_manifest"):
        verify_anchor(signed(m, "sh"))


def test_city_prefixes_and_relays_are_well_formed() -> None:
    check_form(manifest(1, 1, member("sh"), member("js", juris=("32", "3205", "320505"), relay="sh")))


def test_bytes_that_are_not_a_manifest() -> None:
    with pytest.raises(ManifestRejected, match="malformed_manifest"):
        verify_anchor(mpb.SignedManifest(manifest=b"\xff\xff"))


# --- successors ---------------------------------------------------------------------------------


def test_a_chain_of_versions_with_changing_membership_and_key_rotation() -> None:
    now = T0 + 10 * DAY
    v1 = verify_anchor(signed(V1, "sh", "js"))
    # Anhui joins and the threshold rises; newcomers' signatures need not count for v1's quorum.
    v2 = verify_successor(v1, signed(manifest(2, 3, *V1.members, member("ah")), "sh", "js", "ah"), now)
    # Shanghai publishes a second key; the old one is retiring but still signs this version.
    rotating = member("sh", key("sh", status=RETIRING), key("sh2"))
    v3 = verify_successor(
        v2, signed(manifest(3, 3, rotating, *v2.manifest.members[1:]), "sh", "zj", "ah"), now
    )
    assert v3.signing_key_id("sh", now) == KEYS["sh2"].key_id
    assert v3.verify_key("sh", KEYS["sh"].key_id, now) == KEYS["sh"].public_key
    # Zhejiang leaves and the old Shanghai key is gone; the new key signs.
    v4_body = manifest(4, 2, member("sh", key("sh2")), member("js"), member("ah"))
    v4 = verify_successor(v3, signed(v4_body, "sh2", "js", "ah"), now)
    assert [m.node_id for m in v4.members] == ["sh", "js", "ah"]
    with pytest.raises(EnvelopeRejected, match="unknown_key"):
        v4.verify_key("sh", KEYS["sh"].key_id, now)
    # Jumping versions is fine, but only with a quorum of the version already trusted.
    with pytest.raises(ManifestRejected, match="no_quorum_of_previous"):
        verify_successor(v1, signed(v4_body, "sh2", "js", "ah"), now)


def test_newcomers_cannot_vote_themselves_in() -> None:
    v1 = verify_anchor(signed(V1, "sh", "js"))
    v2 = manifest(2, 2, *V1.members, member("ah"), member("x"))
    with pytest.raises(ManifestRejected) as err:
        verify_successor(v1, signed(v2, "sh", "ah", "x"), T0)
    assert err.value.code == "no_quorum_of_previous"


def test_successor_needs_its_own_quorum_too() -> None:
    v1 = verify_anchor(signed(V1, "sh", "js"))
    v2 = manifest(2, 3, *V1.members)
    with pytest.raises(ManifestRejected, match="no_quorum"):
        verify_successor(v1, signed(v2, "sh", "js"), T0)


@pytest.mark.parametrize("version", [0, 1])
def test_rollback_and_replay_are_refused(version: int) -> None:
    v1 = verify_anchor(signed(V1, "sh", "js"))
    older = manifest(version, 2, *V1.members, issued_at_ms=T0, expires_at_ms=T0 + 90 * DAY)
    with pytest.raises(ManifestRejected) as err:
        verify_successor(v1, signed(older, "sh", "js", "zj"), T0)
    assert err.value.code == "rollback"


def test_expired_successor_and_other_federation() -> None:
    v1 = verify_anchor(signed(V1, "sh", "js"))
    v2 = signed(manifest(2, 2, *V1.members, expires_at_ms=T0 + 5 * DAY), "sh", "js")
    assert verify_successor(v1, v2, T0 + 5 * DAY - 1).manifest.version == 2
    with pytest.raises(ManifestRejected, match="expired"):
        verify_successor(v1, v2, T0 + 5 * DAY)
    with pytest.raises(ManifestRejected, match="federation_mismatch"):
        verify_successor(v1, signed(manifest(2, 2, *V1.members, federation_id="other"), "sh", "js"), T0)


def test_an_expired_anchor_still_loads_but_says_so() -> None:
    v1 = verify_anchor(signed(V1, "sh", "js"))
    assert not v1.expired(T0 + 90 * DAY - 1)
    assert v1.expired(T0 + 90 * DAY)


# --- the trusted manifest as key directory and routing table ------------------------------------


def trusted_rotation() -> TrustedManifest:
    m = manifest(
        1, 1,
        member("sh", key("sh", status=RETIRING), key("sh2", nb=T0)),
        member("js", key("js", status=REVOKED), juris=("32", "3205")),
        member("zj", juris=("320505",), relay="sh"),
        member("ah", key("ah", nb=T0 + DAY)),
    )  # fmt: skip
    return verify_anchor(signed(m, "sh"))


def test_verify_key_reasons() -> None:
    t = trusted_rotation()
    assert t.verify_key("sh", KEYS["sh"].key_id, T0) == KEYS["sh"].public_key
    for args, code in [
        (("x", KEYS["x"].key_id, T0), "unknown_sender"),
        (("sh", KEYS["js"].key_id, T0), "unknown_key"),
        (("js", KEYS["js"].key_id, T0), "key_revoked"),
        (("ah", KEYS["ah"].key_id, T0), "key_not_valid"),
        (("sh", KEYS["sh"].key_id, T0 + 365 * DAY), "key_not_valid"),
    ]:
        with pytest.raises(EnvelopeRejected) as err:
            t.verify_key(*args)
        assert err.value.code == code


def test_signing_key_id_prefers_the_newest_active_key() -> None:
    t = trusted_rotation()
    assert t.signing_key_id("sh", T0) == KEYS["sh2"].key_id
    assert t.signing_key_id("ah", T0 + DAY) == KEYS["ah"].key_id
    for node, at in [("sh", T0 - 1), ("js", T0), ("ah", T0), ("x", T0)]:
        with pytest.raises(NotFound, match="no_signing_key"):
            t.signing_key_id(node, at)


def test_owner_of_takes_the_longest_prefix() -> None:
    t = trusted_rotation()
    assert t.owner_of("310101").node_id == "sh"
    assert t.owner_of("320100").node_id == "js"
    assert t.owner_of("320583").node_id == "js"
    assert t.owner_of("320505").node_id == "zj"
    with pytest.raises(NotFound, match="no_route"):
        t.owner_of("330100")


# --- files --------------------------------------------------------------------------------------


def test_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "fed" / "yrd.manifest"
    s = signed(V1, "sh", "js")
    save_signed_manifest(path, s)
    save_signed_manifest(path, s)
    assert load_signed_manifest(path) == s
    assert sorted(p.name for p in path.parent.iterdir()) == ["yrd.manifest"]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_signed_manifest(tmp_path / "missing.manifest")
    (tmp_path / "bad.manifest").write_bytes(b"\xff\xff")
    with pytest.raises(ManifestRejected, match="malformed_manifest"):
        load_signed_manifest(tmp_path / "bad.manifest")
