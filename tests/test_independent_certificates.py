"""The e-certificates of docs/protocol.md section 15 through the verifier written from the document alone.

The worked example of 15.5 must reproduce to the byte and verify; each check of 15.4 is then
exercised by changing the example in one way, re-signed so that only the check aimed at can
refuse it, and the verdict must be the reason code the document names for that step.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.independent.primitives import ed25519_sign, key_id_for, public_key_for
from tests.independent.ref_certificates import (
    Certificate,
    CertifiedField,
    Holder,
    SignedCertificate,
    certificate_signing_input,
    encode_certificate,
    encode_signed,
    ld_field,
    read_signed_certificate,
    sign_certificate,
    text_form,
    verdict,
)
from tests.independent.ref_manifest import (
    ACTIVE,
    RETIRING,
    REVOKED,
    Manifest,
    Member,
    MemberKey,
    verify_anchor,
)

# 15.5, copied from the document.
SEED = hashlib.sha256(b"yrd-vector-seed:certificate").digest()
DOC_PUBLIC_KEY = "0459ad712be6379c36483e94bf06b33864118d6dc7e442d960c320717e82e42a"
DOC_KEY_ID = "k-5413b3d41fa9af91"
DOC_SIGNING_INPUT_BYTES = 362
DOC_SIGNING_INPUT_SHA256 = "66c9dd442aa112e3faf3ff5589c1ba4139cb4329a416b8aeace2a9f618d331c7"
DOC_SIGNATURE = (
    "af4f90c02499b62e9a1df6bfd829c967f993e8a1c133d13adea422e51498428f"
    "823a91792e33b49510c4bca680d7659beb41606fde12d3f89d75502693b2c30d"
)
ISSUED = 1767225600000
EXAMPLE = Certificate(
    certificate_id="node-zj/0193a1b2c3d4e5f60718293a4b5c",
    name="营业执照",
    name_en="Business licence",
    holder=Holder(2, "杭州示例科技有限公司", "91330106MA2B3C4D5E"),
    fields=(CertifiedField("credit_code", "统一社会信用代码", "91330106MA2B3C4D5E"),),
    issued_at_ms=ISSUED,
    valid_until_ms=0,
    issuer="node-zj",
    department="杭州市市场监督管理局",
    service_id="zj-business-licence",
    application_id="0193a1b2c3d4e5f60718293a4b5c",
    key_id=DOC_KEY_ID,
)
SIGNED = SignedCertificate(EXAMPLE, bytes.fromhex(DOC_SIGNATURE))

# The manifest of 15.5: the key listed for a year around the example, checked a day after issue.
DAY = 86_400_000
NOW = ISSUED + DAY
OTHER_SEED = hashlib.sha256(b"yrd-vector-seed:other").digest()
OTHER_KEY_ID = key_id_for(public_key_for(OTHER_SEED))


def _key(
    seed: bytes, status: int = ACTIVE, not_before: int = ISSUED - DAY, not_after: int = ISSUED + 365 * DAY
) -> MemberKey:
    public_key = public_key_for(seed)
    return MemberKey(key_id_for(public_key), public_key, not_before, not_after, status)


def manifest(*, expires: int = ISSUED + 30 * DAY, **key: Any) -> Manifest:
    members = (
        Member("node-zj", "浙江", ("33",), "zj:443", "https://zj", (_key(SEED, **key),), ""),
        Member("node-sh", "上海", ("31",), "sh:443", "https://sh", (_key(OTHER_SEED),), ""),
    )
    return Manifest("yrd-test", 1, 1, ISSUED - DAY, expires, members)


def resigned(**changes: Any) -> SignedCertificate:
    """The example with fields changed and signed again by the issuer's key."""
    return sign_certificate(dataclasses.replace(EXAMPLE, **changes), SEED)


def text(signed: SignedCertificate) -> str:
    return text_form(encode_signed(signed))


# The worked example.


def test_worked_example_reproduces_the_documents_numbers() -> None:
    public_key = public_key_for(SEED)
    assert public_key.hex() == DOC_PUBLIC_KEY
    assert key_id_for(public_key) == DOC_KEY_ID
    signing_input = certificate_signing_input(EXAMPLE)
    assert len(signing_input) == DOC_SIGNING_INPUT_BYTES
    assert hashlib.sha256(signing_input).hexdigest() == DOC_SIGNING_INPUT_SHA256
    assert ed25519_sign(SEED, signing_input).hex() == DOC_SIGNATURE


def test_worked_example_verifies_in_every_form() -> None:
    """15.3: the text, its prefix in lower case, whitespace anywhere, and the file's bytes."""
    qr = text(SIGNED)
    spaced = " \n".join(qr[i : i + 7] for i in range(0, len(qr), 7)) + "\r\n"
    for form in (qr, "yrdc1:" + qr[6:], spaced, encode_signed(SIGNED), qr.encode("ascii")):
        assert verdict(form, manifest(), NOW) == "valid"


def test_the_text_form_is_unpadded_upper_case_base32_under_the_prefix() -> None:
    qr = text(SIGNED)
    assert qr.startswith("YRDC1:")
    assert set(qr[6:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert read_signed_certificate(encode_signed(SIGNED)) == SIGNED


def test_a_re_encoded_certificate_still_verifies() -> None:
    """15.2 and section 8: fields in another order, an unknown field, the message split in two."""
    body = encode_certificate(EXAMPLE)
    signature = ld_field(2, SIGNED.signature)
    reordered = signature + ld_field(15, b"new") + ld_field(1, body) + ld_field(15, b"new")
    strings = b"".join(ld_field(n, v.encode()) for n, v in enumerate(
        (EXAMPLE.certificate_id, EXAMPLE.name, EXAMPLE.name_en), start=1))  # fmt: skip
    assert body.startswith(strings)
    split = ld_field(1, strings) + signature + ld_field(1, body[len(strings) :])
    holder = EXAMPLE.holder
    whole_holder = ld_field(
        4,
        bytes([0x08, holder.kind])
        + ld_field(2, holder.display_name.encode())
        + ld_field(3, holder.display_id.encode()),
    )
    assert whole_holder in body
    halves = ld_field(4, bytes([0x08, holder.kind]) + ld_field(2, holder.display_name.encode()))
    halves += ld_field(4, ld_field(3, holder.display_id.encode()))
    holder_split = ld_field(1, body.replace(whole_holder, halves)) + signature
    for form in (reordered, split, holder_split):
        assert verdict(form, manifest(), NOW) == "valid"


# 15.4 step 1: malformed. Each case breaks one rule and is signed again, so only step 1 can refuse it.

LONG = "长" * 201
MALFORMED_FIELDS: dict[str, dict[str, Any]] = {
    "empty-name": {"name": ""},
    "name-201-characters": {"name": LONG},
    "name_en-201-characters": {"name_en": LONG},
    "department-201-characters": {"department": LONG},
    "empty-service_id": {"service_id": ""},
    "service_id-201-characters": {"service_id": "s" * 201},
    "empty-key_id": {"key_id": ""},
    "certificate_id-not-issuer-slash-application": {"certificate_id": "node-zj:0193a1b2c3d4e5f60718293a4b5c"},
    "certificate_id-of-another-application": {"certificate_id": "node-zj/0193a1b2c3d4e5f60718293a4b5d"},
    "empty-application_id": {"application_id": "", "certificate_id": "node-zj/"},
    "empty-issuer": {"issuer": "", "certificate_id": "/0193a1b2c3d4e5f60718293a4b5c"},
    "holder-kind-absent": {"holder": Holder(0, "杭州示例科技有限公司", "91330106MA2B3C4D5E")},
    "holder-kind-3": {"holder": Holder(3, "杭州示例科技有限公司", "91330106MA2B3C4D5E")},
    "holder-without-name": {"holder": Holder(2, "", "91330106MA2B3C4D5E")},
    "holder-without-id": {"holder": Holder(2, "杭州示例科技有限公司", "")},
    "holder-name-201-characters": {"holder": Holder(2, LONG, "91330106MA2B3C4D5E")},
    "holder-id-201-characters": {"holder": Holder(2, "杭州示例科技有限公司", "9" * 201)},
    "17-fields": {"fields": tuple(CertifiedField(f"f{i}", "标签", "值") for i in range(17))},
    "field-names-repeat": {"fields": (CertifiedField("a", "甲", "1"), CertifiedField("a", "乙", "2"))},
    "field-name-empty": {"fields": (CertifiedField("", "标签", "值"),)},
    "field-name-65-characters": {"fields": (CertifiedField("n" * 65, "标签", "值"),)},
    "field-label-65-characters": {"fields": (CertifiedField("n", "标" * 65, "值"),)},
    "field-value-201-characters": {"fields": (CertifiedField("n", "标签", LONG),)},
    "issued_at-zero": {"issued_at_ms": 0},
    "issued_at-negative": {"issued_at_ms": -1},
    "valid_until-equal-to-issued_at": {"valid_until_ms": ISSUED},
    "valid_until-before-issued_at": {"valid_until_ms": ISSUED - 1},
    "valid_until-negative": {"valid_until_ms": -1},
}
# The limits themselves are accepted.
AT_THE_LIMITS: dict[str, dict[str, Any]] = {
    "name-200-characters": {"name": LONG[:200]},
    "name_en-and-department-empty": {"name_en": "", "department": ""},
    "16-fields": {"fields": tuple(CertifiedField(f"f{i}", "标签", "值") for i in range(16))},
    "field-name-and-label-64-characters-value-200": {
        "fields": (CertifiedField("n" * 64, "标" * 64, LONG[:200]),)
    },
    "a-field-with-empty-label-and-value": {"fields": (CertifiedField("n", "", ""),)},
    "a-person-with-masked-values": {"holder": Holder(1, "王*明", "330106********123X")},
    "holder-values-200-characters": {"holder": Holder(2, LONG[:200], "9" * 200)},
}


@pytest.mark.parametrize("changes", [pytest.param(c, id=n) for n, c in MALFORMED_FIELDS.items()])
def test_a_certificate_breaking_one_form_rule_is_malformed(changes: dict[str, Any]) -> None:
    assert verdict(text(resigned(**changes)), manifest(), NOW) == "malformed"


@pytest.mark.parametrize("changes", [pytest.param(c, id=n) for n, c in AT_THE_LIMITS.items()])
def test_a_certificate_at_the_limits_is_valid(changes: dict[str, Any]) -> None:
    assert verdict(text(resigned(**changes)), manifest(), NOW) == "valid"


def _pad_to(size: int) -> str:
    """The example's text with trailing spaces up to ``size`` bytes."""
    qr = text(SIGNED)
    return qr + " " * (size - len(qr))


def _invalid_utf8() -> bytes:
    raw = encode_signed(SIGNED)
    name = "营业执照".encode()
    assert raw.count(name) == 1
    return raw.replace(name, b"\xff" * len(name))


def _padded() -> str:
    """The text of a certificate whose length is not a multiple of 5 bytes, padding restored."""
    qr = text(resigned(name_en="Business licence."))
    assert len(qr[6:]) % 8
    return qr + "=" * (-len(qr[6:]) % 8)


MALFORMED_INPUTS: dict[str, Callable[[], str | bytes]] = {
    "input-of-2529-bytes": lambda: _pad_to(2529),
    "empty-input": lambda: b"",
    "prefix-YRDC2": lambda: "YRDC2:" + text(SIGNED)[6:],
    "prefix-without-colon": lambda: "YRDC1" + text(SIGNED)[6:],
    "no-prefix": lambda: text(SIGNED)[6:],
    "base32-with-more-than-its-padding": lambda: _padded() + "=",
    "base32-with-padding-after-a-whole-block": lambda: text(SIGNED) + "=" * 8,
    "base32-with-an-equals-sign-inside": lambda: text(SIGNED)[:20] + "=" + text(SIGNED)[20:],
    "whitespace-inside-the-prefix": lambda: "YR DC1:" + text(SIGNED)[6:],
    "a-no-break-space-is-not-whitespace": lambda: text(SIGNED)[:20] + "\u00a0" + text(SIGNED)[20:],
    "base32-with-a-digit-outside-the-alphabet": lambda: text(SIGNED)[:-1] + "1",
    "base32-of-impossible-length": lambda: (
        text(SIGNED) + "A" * next(n for n in range(8) if (len(text(SIGNED)) - 6 + n) % 8 in (1, 3, 6))
    ),
    "file-cut-short": lambda: encode_signed(SIGNED)[:-1],
    "file-with-a-trailing-newline": lambda: encode_signed(SIGNED) + b"\n",
    "string-not-utf8": _invalid_utf8,
    "signature-63-bytes": lambda: encode_signed(SignedCertificate(EXAMPLE, SIGNED.signature[:63])),
    "signature-65-bytes": lambda: encode_signed(SignedCertificate(EXAMPLE, SIGNED.signature + b"\x00")),
    "signature-absent": lambda: encode_signed(SignedCertificate(EXAMPLE, b"")),
    "certificate-absent": lambda: encode_signed(SIGNED)[-66:],
}


@pytest.mark.parametrize("make", [pytest.param(m, id=n) for n, m in MALFORMED_INPUTS.items()])
def test_an_input_that_is_not_a_well_formed_certificate_is_malformed(make: Callable[[], str | bytes]) -> None:
    assert verdict(make(), manifest(), NOW) == "malformed"


def test_an_input_of_2528_bytes_is_read() -> None:
    assert verdict(_pad_to(2528), manifest(), NOW) == "valid"


def test_a_certificate_over_1536_bytes_is_malformed_in_either_form() -> None:
    """15.4 step 1: one bound for the file and the text, the one 15.3 puts on the issuer."""
    fields = tuple(CertifiedField(f"f{i}", "标签", "值" * 100) for i in range(5))
    big = resigned(fields=fields)
    assert 1536 < len(encode_signed(big)) <= 2528
    assert verdict(encode_signed(big), manifest(), NOW) == "malformed"
    assert verdict(text(big), manifest(), NOW) == "malformed"


def test_a_pasted_text_is_read_in_either_case_with_or_without_its_padding() -> None:
    """15.3: what a scanner or a clerk's copy may make of the QR text is read, not refused."""
    qr = _padded()
    forms = (qr, qr.lower(), "yrdc1:" + qr[6:].lower(), "\t" + qr.rstrip("=") + "==\n", qr.rstrip("="))
    for form in forms:
        assert verdict(form, manifest(), NOW) == "valid", form


def test_malformed_comes_before_the_manifest() -> None:
    assert verdict(text(resigned(name="")), manifest(expires=NOW), NOW) == "malformed"


# Steps 2 to 9, each the first to fail.


def test_step_2_an_expired_manifest_refuses_before_the_issuer_is_looked_up() -> None:
    assert verdict(text(SIGNED), manifest(expires=NOW + 1), NOW) == "valid"
    assert verdict(text(SIGNED), manifest(expires=NOW), NOW) == "manifest_expired"
    unknown = resigned(issuer="node-xx", certificate_id="node-xx/0193a1b2c3d4e5f60718293a4b5c")
    assert verdict(text(unknown), manifest(expires=NOW), NOW) == "manifest_expired"


def test_step_3_an_issuer_that_is_not_a_member() -> None:
    unknown = resigned(issuer="node-xx", certificate_id="node-xx/0193a1b2c3d4e5f60718293a4b5c")
    assert verdict(text(unknown), manifest(), NOW) == "unknown_issuer"


def test_step_4_a_key_the_issuer_does_not_list() -> None:
    """Another member's key does not count, even when it really signed."""
    other = sign_certificate(dataclasses.replace(EXAMPLE, key_id=OTHER_KEY_ID), OTHER_SEED)
    assert verdict(text(other), manifest(), NOW) == "unknown_key"
    assert verdict(text(resigned(key_id="k-0000000000000000")), manifest(), NOW) == "unknown_key"


def test_step_5_a_revoked_key_is_refused_and_a_retiring_one_accepted() -> None:
    assert verdict(text(SIGNED), manifest(status=REVOKED), NOW) == "key_revoked"
    assert verdict(text(SIGNED), manifest(status=REVOKED, not_after=ISSUED), NOW) == "key_revoked"
    assert verdict(text(SIGNED), manifest(status=RETIRING), NOW) == "valid"


def test_step_6_the_keys_window_must_contain_the_issue_time_not_now() -> None:
    assert verdict(text(SIGNED), manifest(not_before=ISSUED), NOW) == "valid"
    assert verdict(text(SIGNED), manifest(not_before=ISSUED + 1), NOW) == "key_not_valid"
    assert verdict(text(SIGNED), manifest(not_after=ISSUED), NOW) == "key_not_valid"
    assert verdict(text(SIGNED), manifest(not_after=ISSUED + 1), NOW) == "valid"  # now is past the window
    forged = SignedCertificate(EXAMPLE, bytes(64))
    assert verdict(text(forged), manifest(not_after=ISSUED), NOW) == "key_not_valid"


def test_step_7_a_bad_signature() -> None:
    flipped = bytes([SIGNED.signature[0] ^ 1]) + SIGNED.signature[1:]
    assert verdict(text(SignedCertificate(EXAMPLE, flipped)), manifest(), NOW) == "bad_signature"


UNSIGNED_CHANGES: dict[str, dict[str, Any]] = {
    "name": {"name": "营业执照（副本）"},
    "name_en": {"name_en": ""},
    "holder.kind": {"holder": Holder(1, "杭州示例科技有限公司", "91330106MA2B3C4D5E")},
    "holder.display_name": {"holder": Holder(2, "杭州示例科技有限公司 ", "91330106MA2B3C4D5E")},
    "holder.display_id": {"holder": Holder(2, "杭州示例科技有限公司", "91330106MA2B3C4D5F")},
    "field.name": {"fields": (CertifiedField("credit", "统一社会信用代码", "91330106MA2B3C4D5E"),)},
    "field.label": {"fields": (CertifiedField("credit_code", "信用代码", "91330106MA2B3C4D5E"),)},
    "field.value": {"fields": (CertifiedField("credit_code", "统一社会信用代码", "91330106MA2B3C4D5F"),)},
    "a-field-added": {"fields": (*EXAMPLE.fields, CertifiedField("scope", "经营范围", "软件"))},
    "issued_at_ms": {"issued_at_ms": ISSUED + 1},
    "valid_until_ms": {"valid_until_ms": NOW + DAY},
    "department": {"department": "浙江省市场监督管理局"},
    "service_id": {"service_id": "zj-business-licence-2"},
    "application_id": {"application_id": "0193a1b2c3d4e5f60718293a4b5d",
                       "certificate_id": "node-zj/0193a1b2c3d4e5f60718293a4b5d"},
}  # fmt: skip


@pytest.mark.parametrize("changes", [pytest.param(c, id=n) for n, c in UNSIGNED_CHANGES.items()])
def test_step_7_every_field_is_signed(changes: dict[str, Any]) -> None:
    """15.2 "nothing shown is unsigned": the example changed, its signature kept."""
    changed = SignedCertificate(dataclasses.replace(EXAMPLE, **changes), SIGNED.signature)
    assert verdict(text(changed), manifest(), NOW) == "bad_signature"
    assert verdict(text(resigned(**changes)), manifest(), NOW) == "valid"


def test_two_fields_swapped_break_the_signature() -> None:
    two = (CertifiedField("a", "甲", "1"), CertifiedField("b", "乙", "2"))
    signed = resigned(fields=two)
    swapped = SignedCertificate(dataclasses.replace(signed.certificate, fields=two[::-1]), signed.signature)
    assert verdict(text(signed), manifest(), NOW) == "valid"
    assert verdict(text(swapped), manifest(), NOW) == "bad_signature"


def test_step_7_comes_before_the_dates() -> None:
    """An expired or future certificate its issuer did not sign is `bad_signature`, never `expired`."""
    expired = dataclasses.replace(EXAMPLE, valid_until_ms=NOW)
    future = dataclasses.replace(EXAMPLE, issued_at_ms=NOW + DAY)
    for forged in (expired, future):
        assert verdict(text(SignedCertificate(forged, SIGNED.signature)), manifest(), NOW) == "bad_signature"


def test_step_8_issued_more_than_five_minutes_ahead() -> None:
    assert verdict(text(SIGNED), manifest(), ISSUED - 300_000) == "valid"
    assert verdict(text(SIGNED), manifest(), ISSUED - 300_001) == "not_yet_valid"


def test_step_9_expired_at_valid_until() -> None:
    just_after = text(resigned(valid_until_ms=ISSUED + 1))
    assert verdict(just_after, manifest(), ISSUED) == "valid"
    lasting = text(resigned(valid_until_ms=NOW + 1))
    assert verdict(lasting, manifest(), NOW) == "valid"
    assert verdict(lasting, manifest(), NOW + 1) == "expired"
    assert verdict(text(SIGNED), manifest(expires=NOW * 2), NOW * 2 - 1) == "valid"  # 0: no end


# docs/protocol-vectors.json, section "certificates" (section 9): the same file the reference is held to.

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "docs" / "protocol-vectors.json").read_text("utf-8")
)
CERTIFICATE_VECTORS = VECTORS["certificates"]


def test_the_vectors_worked_example_is_the_documents() -> None:
    example = CERTIFICATE_VECTORS["example"]
    raw = bytes.fromhex(example["signed_certificate"])
    assert encode_signed(SIGNED) == raw
    assert text_form(raw) == example["text"]
    assert (
        certificate_signing_input(read_signed_certificate(raw).certificate).hex() == example["signing_input"]
    )
    assert example["signature"] == DOC_SIGNATURE
    for key in CERTIFICATE_VECTORS["keys"]:
        public_key = public_key_for(bytes.fromhex(key["seed"]))
        assert (public_key.hex(), key_id_for(public_key)) == (key["public_key"], key["key_id"])


@pytest.mark.parametrize("case", CERTIFICATE_VECTORS["cases"], ids=lambda case: case["name"])
def test_certificate_vector(case: dict[str, Any]) -> None:
    trusted = verify_anchor(bytes.fromhex(CERTIFICATE_VECTORS["signed_manifest"]))
    data = bytes.fromhex(case["input"]) if case["form"] == "file" else case["input"]
    assert verdict(data, trusted, case["now_ms"]) == case["expect"]


def test_the_independent_package_imports_nothing_of_ours() -> None:
    """The point of tests/independent/ is that only the document connects it to our code."""
    ours = {"core", "node", "registry", "policies", "simulations", "yrd"}
    package = Path(__file__).parent / "independent"
    for source in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not {name.split(".")[0] for name in names} & ours, f"{source.name} imports {names}"
