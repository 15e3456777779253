"""E-certificates alone: the signing input, the text form and its QR code, every refusal
with its reason in the order of docs/protocol.md 15.4, hostile input, and what an owner
puts in a certificate it issues (holder masked or named, results attested)."""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st
from yrd.catalogue.v1 import catalogue_pb2
from yrd.certificate.v1.certificate_pb2 import (
    HOLDER_KIND_ORGANISATION,
    HOLDER_KIND_PERSON,
    Certificate,
    CertifiedField,
    Holder,
    SignedCertificate,
)
from yrd.federation.v1 import manifest_pb2 as mpb
from yrd.peer.v1 import peer_pb2

from core.errors import CERTIFICATE_REASONS, CertificateRejected
from core.keys import NodeKey
from node.cases.certificates import certificate_document
from node.counter.certificate_contract import REASONS, CertificateVerdict
from registry.certificates import (
    CONTENT_TYPE,
    MAX_CERTIFICATE_BYTES,
    MAX_FIELDS,
    MAX_TEXT_CHARS,
    TEXT_PREFIX,
    decode,
    describe,
    mask_id,
    mask_name,
    sign_certificate,
    signing_input,
    to_text,
    verify,
)
from registry.manifest import TrustedManifest, sign_manifest, verify_anchor
from tests.support.vectors import VECTORS

T0 = 1_767_225_600_000
DAY = 86_400_000
KEYS = {n: NodeKey.from_seed(hashlib.sha256(n.encode()).digest()) for n in ("zj", "ah", "old", "gone", "x")}


def _key(
    name: str, nb: int = T0 - DAY, na: int = T0 + 365 * DAY, status: int = mpb.KEY_STATUS_ACTIVE
) -> mpb.MemberKey:
    k = KEYS[name]
    return mpb.MemberKey(
        key_id=k.key_id, public_key=k.public_key, not_before_ms=nb, not_after_ms=na, status=status
    )


def _manifest(expires_at_ms: int = T0 + 90 * DAY) -> TrustedManifest:
    m = mpb.Manifest(
        federation_id="yrd",
        version=1,
        threshold=2,
        issued_at_ms=T0,
        expires_at_ms=expires_at_ms,
        members=[
            mpb.Member(
                node_id="zhejiang",
                jurisdictions=["33"],
                keys=[
                    _key("zj"),
                    _key("old", nb=T0 - 30 * DAY, na=T0 - DAY),
                    _key("gone", status=mpb.KEY_STATUS_REVOKED),
                ],
            ),
            mpb.Member(node_id="anhui", jurisdictions=["34"], keys=[_key("ah")]),
        ],
    )
    signed = mpb.SignedManifest(manifest=m.SerializeToString())
    for node, key in (("zhejiang", "zj"), ("anhui", "ah")):
        signed = sign_manifest(signed, node, KEYS[key])
    return verify_anchor(signed)


MANIFEST = _manifest()
COMPANY, CREDIT_CODE = "杭州示例科技有限公司", "91330100MA2XXXXX0X"
NOW = T0 + 10 * DAY
APP = "0190a3b4c5d6e7f8a9b0c1d2"


def licence(**over: object) -> Certificate:
    fields: dict[str, object] = {
        "certificate_id": f"zhejiang/{APP}",
        "name": "企业设立登记（营业执照）",
        "name_en": "Enterprise establishment registration (business licence)",
        "holder": Holder(
            kind=HOLDER_KIND_ORGANISATION,
            display_name=COMPANY,
            display_id=CREDIT_CODE,
        ),
        "fields": [CertifiedField(name="credit_code", label="统一社会信用代码", value=CREDIT_CODE)],
        "issued_at_ms": T0 + DAY,
        "issuer": "zhejiang",
        "department": "杭州市市场监督管理局",
        "service_id": "zj.hangzhou.business-licence",
        "application_id": APP,
    }
    fields.update(over)
    return Certificate(**fields)  # type: ignore[arg-type]


def signed(key: str = "zj", **over: object) -> SignedCertificate:
    return sign_certificate(licence(**over), KEYS[key])


def test_a_signed_certificate_verifies_from_its_text_and_its_file() -> None:
    s = signed()
    for form in (
        to_text(s),
        s.SerializeToString(),
        to_text(s).lower(),
        " " + to_text(s)[:40] + "\n" + to_text(s)[40:],
        _padded(s),
        _padded(s).lower() + "\r\n",
    ):
        verdict = verify(form, MANIFEST, NOW)
        assert (verdict.valid, verdict.reason) == (True, "valid")
        assert verdict.certificate == describe(s)
    assert verdict.certificate is not None
    assert verdict.certificate["holder"] == {
        "kind": "organisation",
        "name": COMPANY,
        "id": CREDIT_CODE,
    }
    assert verdict.certificate["issuer"] == "zhejiang" and verdict.certificate["key_id"] == KEYS["zj"].key_id


def _padded(s: SignedCertificate) -> str:
    """The text with the '=' a base32 encoder adds, as a clerk's tool may paste it."""
    qr = to_text(s)
    assert len(qr) % 8 != len(TEXT_PREFIX) % 8, "no padding to restore"
    return qr + "=" * (-(len(qr) - len(TEXT_PREFIX)) % 8)


def test_the_text_form_fits_a_qr_code_in_alphanumeric_mode() -> None:
    """The largest certificate the format allows still makes a QR code at level M."""
    big = licence(
        fields=[CertifiedField(name=f"f{i:02d}", label="标签", value="9" * 40) for i in range(MAX_FIELDS)]
    )
    s = sign_certificate(big, KEYS["zj"])
    assert s.ByteSize() <= MAX_CERTIFICATE_BYTES
    qr = segno.make(to_text(s), error="m")
    assert qr.mode == "alphanumeric"
    assert decode(to_text(s)) == s


def test_a_certificate_too_large_for_a_qr_code_is_not_signed() -> None:
    huge = licence(
        fields=[CertifiedField(name=f"f{i:02d}", label="标签", value="长" * 200) for i in range(MAX_FIELDS)]
    )
    with pytest.raises(CertificateRejected) as e:
        sign_certificate(huge, KEYS["zj"])
    assert e.value.code == "malformed"


def _over_the_limit() -> SignedCertificate:
    """A certificate of 1,537 to 1,539 bytes, signed past sign_certificate's refusal: its text
    (about 2,470 characters) is still within the input limit, so only the size can refuse it."""
    values = ["值" * 100] * 2 + [""]
    while True:
        big = SignedCertificate(certificate=licence(
            fields=[CertifiedField(name=f"f{i}", label="标签", value=v) for i, v in enumerate(values)],
            key_id=KEYS["zj"].key_id,
        ), signature=bytes(64))  # fmt: skip
        if big.ByteSize() > MAX_CERTIFICATE_BYTES:
            big.signature = KEYS["zj"].sign(signing_input(big.certificate))
            return big
        values[-1] += "值"


def test_a_certificate_over_the_limit_is_malformed_as_a_file_and_as_text() -> None:
    """One bound for both forms (15.4 step 1): what no issuer may sign is not read either."""
    big = _over_the_limit()
    assert len(to_text(big)) <= MAX_TEXT_CHARS
    for form in (big.SerializeToString(), to_text(big)):
        verdict = verify(form, MANIFEST, NOW)
        assert (verdict.reason, verdict.detail) == ("malformed", f"more than {MAX_CERTIFICATE_BYTES} bytes")


def test_the_signing_input_covers_every_field() -> None:
    """Changing any one field changes the bytes signed (so a signature cannot be reused)."""
    base = licence(valid_until_ms=T0 + 100 * DAY, key_id="k")
    changes: dict[str, object] = {
        "certificate_id": "x",
        "name": "x",
        "name_en": "x",
        "holder": Holder(kind=HOLDER_KIND_PERSON, display_name=COMPANY, display_id=CREDIT_CODE),
        "fields": [CertifiedField(name="credit_code", label="统一社会信用代码", value="91330100MA2XXXXX0Y")],
        "issued_at_ms": 1,
        "valid_until_ms": 2,
        "issuer": "x",
        "department": "x",
        "service_id": "x",
        "application_id": "x",
        "key_id": "x",
    }
    assert set(changes) == {f.name for f in Certificate.DESCRIPTOR.fields}
    for name, value in changes.items():
        other = Certificate()
        other.CopyFrom(base)
        if isinstance(value, (Holder, list)):
            other.ClearField(name)  # type: ignore[arg-type]
            if isinstance(value, Holder):
                other.holder.CopyFrom(value)
            else:
                other.fields.extend(value)
        else:
            setattr(other, name, value)
        assert signing_input(other) != signing_input(base), name


def _tampered() -> SignedCertificate:
    s = signed()
    s.certificate.fields[0].value = "91330100MA2YYYYY0Y"
    return s


def _relabelled_holder() -> SignedCertificate:
    s = signed()
    s.certificate.holder.display_name = "另一家公司"
    return s


def _expired() -> SignedCertificate:
    return signed(valid_until_ms=NOW - 1)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_tampered, "bad_signature"),
        (_relabelled_holder, "bad_signature"),
        (lambda: signed("x"), "unknown_key"),
        (
            lambda: signed(issuer="shanghai", certificate_id="shanghai/0190a3b4c5d6e7f8a9b0c1d2"),
            "unknown_issuer",
        ),
        (lambda: signed("gone"), "key_revoked"),
        (lambda: signed("old"), "key_not_valid"),
        (lambda: signed("ah"), "unknown_key"),  # a member's key, but not the issuer's
        (_expired, "expired"),
        (lambda: signed(issued_at_ms=NOW + DAY), "not_yet_valid"),
    ],
)
def test_each_refusal_names_its_reason(make: typing.Callable[[], SignedCertificate], reason: str) -> None:
    verdict = verify(to_text(make()), MANIFEST, NOW)
    assert (verdict.valid, verdict.reason) == (False, reason)
    assert verdict.certificate is not None  # a clerk still sees what it claimed


def test_a_key_valid_then_still_verifies_what_it_signed_then() -> None:
    """Verification looks at the key's window at issue time, not now: a licence outlives
    the key that signed it, as long as the key was not revoked."""
    s = signed("old", issued_at_ms=T0 - 2 * DAY)
    assert verify(to_text(s), MANIFEST, NOW).valid


def test_an_expired_manifest_refuses_everything() -> None:
    stale = _manifest(expires_at_ms=NOW - 1)
    assert verify(to_text(signed()), stale, NOW).reason == "manifest_expired"


def test_the_signature_is_checked_before_the_dates() -> None:
    """A forged certificate is called forged, not expired."""
    s = _expired()
    s.certificate.fields[0].value = "forged"
    assert verify(to_text(s), MANIFEST, NOW).reason == "bad_signature"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        "YRDC1:",
        "YRDC1:!!!!",
        "YRDC1:AAAA",
        "hello",
        b"\xff" * 40,
        "YRDC1:" + "A" * 5000,
        b"\x00" * (MAX_CERTIFICATE_BYTES + 1),
        "YR DC1:" + to_text(signed())[6:],
        to_text(signed()) + "=" * 8,
        _padded(signed()) + "=",
        to_text(signed())[:20] + "=" + to_text(signed())[20:],
        to_text(signed())[:20] + "\u3000" + to_text(signed())[20:],
    ],
)
def test_malformed_input_is_refused_as_such(data: bytes | str) -> None:
    verdict = verify(data, MANIFEST, NOW)
    assert (verdict.valid, verdict.reason, verdict.certificate) == (False, "malformed", None)


def test_a_certificate_with_a_broken_form_is_malformed() -> None:
    """Form checks run before any key is looked up; a bad certificate id binds nothing."""
    s = signed()
    s.certificate.certificate_id = "zhejiang/another"
    assert verify(s.SerializeToString(), MANIFEST, NOW).reason == "malformed"
    s = signed()
    s.signature = s.signature[:10]
    assert verify(s.SerializeToString(), MANIFEST, NOW).reason == "malformed"
    with pytest.raises(CertificateRejected):
        signed(valid_until_ms=T0)  # before issued_at: never signed


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2500))
def test_garbage_bytes_never_pass_and_never_raise(data: bytes) -> None:
    verdict = verify(data, MANIFEST, NOW)
    assert not verdict.valid and verdict.reason in CERTIFICATE_REASONS


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_garbage_text_after_the_prefix_never_passes(text: str) -> None:
    verdict = verify(TEXT_PREFIX + text, MANIFEST, NOW)
    assert not verdict.valid and verdict.reason in CERTIFICATE_REASONS


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_flipped_byte_of_a_good_certificate_is_refused(position: int, xor: int) -> None:
    raw = bytearray(signed().SerializeToString())
    raw[position % len(raw)] ^= xor or 1
    verdict = verify(bytes(raw), MANIFEST, NOW)
    assert not verdict.valid and verdict.reason in CERTIFICATE_REASONS


def test_the_api_contract_lists_exactly_the_reasons() -> None:
    assert set(typing.get_args(CertificateVerdict.model_fields["reason"].annotation)) == set(REASONS)


# -- issuing ------------------------------------------------------------------------------


def _service(*results: str, **over: object) -> catalogue_pb2.ServiceDefinition:
    return catalogue_pb2.ServiceDefinition(
        service_id=str(over.get("service_id", "zj.hangzhou.birth-certificate")),
        name="出生医学证明首次签发",
        name_en="Birth certificate",
        owner="330100",
        department="杭州市卫生健康委员会",
        results=[
            catalogue_pb2.FormField(name=r, label=r.upper(), type=catalogue_pb2.FIELD_TYPE_STRING)
            for r in results
        ],
    )


PAYLOAD = peer_pb2.ApplicationPayload(
    applicant_name="王小明",
    applicant_id_number="33010619900101123X",
    form_json=json.dumps({"company_name": COMPANY, "phone": "13800000000"}).encode(),
)


def _issued(defn: catalogue_pb2.ServiceDefinition, results: dict[str, str]) -> SignedCertificate | None:
    doc = certificate_document(KEYS["zj"], "zhejiang", defn, APP, PAYLOAD, results, T0 + DAY)
    if doc is None:
        return None
    assert doc.content_type == CONTENT_TYPE
    return decode(doc.data)


def test_a_person_holds_a_certificate_masked() -> None:
    s = _issued(_service("birth_certificate_number"), {"birth_certificate_number": "Q330100123"})
    assert s is not None and verify(to_text(s), MANIFEST, NOW).valid
    assert (s.certificate.holder.kind, s.certificate.holder.display_name) == (HOLDER_KIND_PERSON, "王*明")
    assert s.certificate.holder.display_id == "330106********123X"
    assert "19900101" not in to_text(s) and "王小明" not in s.SerializeToString().decode("utf-8", "replace")
    assert [(f.name, f.label, f.value) for f in s.certificate.fields] == [
        ("birth_certificate_number", "BIRTH_CERTIFICATE_NUMBER", "Q330100123")
    ]


def test_an_enterprise_holds_what_assigns_it_a_credit_code() -> None:
    s = _issued(_service("credit_code"), {"credit_code": CREDIT_CODE})
    assert s is not None
    holder = s.certificate.holder
    assert (holder.kind, holder.display_name, holder.display_id) == (
        HOLDER_KIND_ORGANISATION,
        COMPANY,
        CREDIT_CODE,
    )


def test_validity_comes_from_a_valid_until_result() -> None:
    s = _issued(
        _service("permit_number", "valid_until"), {"permit_number": "P1", "valid_until": "2026-12-31"}
    )
    assert s is not None
    assert [f.name for f in s.certificate.fields] == ["permit_number"]
    end_of_day_cst = 1_798_732_800_000  # 2027-01-01T00:00+08:00
    assert s.certificate.valid_until_ms == end_of_day_cst
    lasting = _manifest(expires_at_ms=end_of_day_cst + DAY)
    assert verify(to_text(s), lasting, end_of_day_cst - 1).valid
    assert verify(to_text(s), lasting, end_of_day_cst).reason == "expired"


def test_no_results_no_certificate_and_a_past_validity_none_either() -> None:
    assert _issued(_service(), {}) is None
    assert (
        _issued(
            _service("permit_number", "valid_until"), {"permit_number": "P1", "valid_until": "2020-01-01"}
        )
        is None
    )


@pytest.mark.parametrize(
    ("name", "masked"), [("王", "王"), ("王明", "王*"), ("王小明", "王*明"), ("欧阳娜娜", "欧**娜")]
)
def test_names_are_masked_but_comparable(name: str, masked: str) -> None:
    assert mask_name(name) == masked


def test_ids_keep_division_and_tail_only() -> None:
    assert mask_id("33010619900101123X") == "330106********123X"
    assert mask_id("12345") == "*****"


def test_the_worked_example_of_the_protocol_document() -> None:
    """docs/protocol.md 15.5, read from the document, so the text and the code agree."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = doc[doc.index("### 15.5") :]
    key = NodeKey.from_seed(hashlib.sha256(b"yrd-vector-seed:certificate").digest())
    assert key.public_key.hex() in section and key.key_id in section
    example = Certificate(
        certificate_id="node-zj/0193a1b2c3d4e5f60718293a4b5c",
        name="营业执照",
        name_en="Business licence",
        holder=Holder(
            kind=HOLDER_KIND_ORGANISATION,
            display_name="杭州示例科技有限公司",
            display_id="91330106MA2B3C4D5E",
        ),
        fields=[CertifiedField(name="credit_code", label="统一社会信用代码", value="91330106MA2B3C4D5E")],
        issued_at_ms=1_767_225_600_000,
        issuer="node-zj",
        department="杭州市市场监督管理局",
        service_id="zj-business-licence",
        application_id="0193a1b2c3d4e5f60718293a4b5c",
    )
    s = sign_certificate(example, key)
    data = signing_input(s.certificate)
    assert f"is {len(data)} bytes with SHA-256\n`{hashlib.sha256(data).hexdigest()}`" in section
    assert f"`{s.signature.hex()}`" in section


# docs/protocol-vectors.json, section "certificates": what another implementation is held to.

CERTIFICATE_VECTORS = VECTORS["certificates"]


def test_the_vectors_are_the_worked_example() -> None:
    example = CERTIFICATE_VECTORS["example"]
    s = SignedCertificate.FromString(bytes.fromhex(example["signed_certificate"]))
    assert to_text(s) == example["text"] and decode(example["text"]) == s
    assert signing_input(s.certificate).hex() == example["signing_input"]
    assert s.signature.hex() == example["signature"]
    for key in CERTIFICATE_VECTORS["keys"]:
        k = NodeKey.from_seed(bytes.fromhex(key["seed"]))
        assert (k.public_key.hex(), k.key_id) == (key["public_key"], key["key_id"])


@pytest.mark.parametrize("case", CERTIFICATE_VECTORS["cases"], ids=lambda case: case["name"])
def test_certificate_vector(case: dict[str, typing.Any]) -> None:
    trusted = verify_anchor(
        mpb.SignedManifest.FromString(bytes.fromhex(CERTIFICATE_VECTORS["signed_manifest"]))
    )
    data = bytes.fromhex(case["input"]) if case["form"] == "file" else case["input"]
    assert verify(data, trusted, case["now_ms"]).reason == case["expect"]


def test_there_is_a_vector_for_every_reason() -> None:
    assert {case["expect"] for case in CERTIFICATE_VECTORS["cases"]} == set(REASONS)
