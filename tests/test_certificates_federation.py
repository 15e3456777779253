"""Issue 13's done-when: a licence issued by Zhejiang is verified offline at the Anhui counter.

A real in-process federation of the two: the business licence is applied for at Anhui,
approved by Zhejiang's automatic handler, and its certificate comes back with the result
documents. Zhejiang is then stopped, and Anhui's API and `yrd cert verify` (with nothing
but Anhui's manifest file) still tell the genuine certificate from an altered one."""

from __future__ import annotations

import argparse
import base64
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from yrd.counter.v1 import counter_pb2, counter_pb2_grpc

from core.errors import CERTIFICATE_REASONS
from node.cases.handlers import uscc_check_char
from node.cli import cert as cert_cli
from registry.certificates import CONTENT_TYPE, decode, to_text
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import PASSWORD, Federation, allow_all_specs, bearer, grpc_reason, node_channel

LICENCE = "zj.hangzhou.business-licence"
BIRTH = "zj.hangzhou.birth-certificate"


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [s for s in PROVINCES if s.node_id in ("anhui", "zhejiang")]
    f = await Federation(tmp_path, allow_all_specs(tmp_path, specs)).start()
    await f.nodes["anhui"].users.add_user("operator", PASSWORD, "operator")
    try:
        yield f
    finally:
        await f.close()


async def issued_certificate(fed: Federation, service_id: str, seed: int) -> str:
    """Apply at Anhui, wait for Zhejiang's decision, return the certificate's QR text."""
    body = application_body(fed.nodes["anhui"].index.get(service_id), random.Random(seed))
    status, created = await fed.submit("anhui", body, f"cert-{service_id}")
    assert status == 201, created
    view = await fed.wait_status("anhui", created["id"], {"completed"})
    certs = [d for d in view["documents"] if d["content_type"] == CONTENT_TYPE]
    assert len(certs) == 1, view["documents"]
    return to_text(decode(base64.b64decode(certs[0]["data"])))


def cli(manifest: Path, certificate: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    cert_cli.register(parser.add_subparsers())
    args = parser.parse_args(["cert", "verify", certificate, "--manifest", str(manifest)])
    code = args.handler(args)
    return code, capsys.readouterr().out


async def test_a_zhejiang_licence_is_verified_offline_at_the_anhui_counter(
    fed: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    licence = await issued_certificate(fed, LICENCE, 3)
    birth = await issued_certificate(fed, BIRTH, 4)
    await fed.stop_node("zhejiang")  # from here on, nobody can ask the issuer

    status, verdict = await fed.call(
        "anhui", "POST", "/api/v1/certificates/verify", json={"certificate": licence}
    )
    assert status == 200, verdict
    assert (verdict["valid"], verdict["reason"]) == (True, "valid")
    cert = verdict["certificate"]
    assert cert["issuer"] == "zhejiang" and cert["service_id"] == LICENCE
    code = cert["holder"]["id"]
    assert cert["holder"]["kind"] == "organisation" and code[-1] == uscc_check_char(code[:17])
    assert [(f["name"], f["value"]) for f in cert["fields"]] == [("credit_code", code)]

    # A resident's certificate shows the holder masked, never the whole id number.
    status, verdict = await fed.call(
        "anhui", "POST", "/api/v1/certificates/verify", json={"certificate": birth}
    )
    assert verdict["valid"] and verdict["certificate"]["holder"]["kind"] == "person"
    assert "*" in verdict["certificate"]["holder"]["id"]

    # The file form, base64 in JSON, is the same certificate.
    as_file = base64.b64encode(decode(licence).SerializeToString()).decode()
    status, verdict = await fed.call(
        "anhui", "POST", "/api/v1/certificates/verify", json={"certificate": as_file}
    )
    assert (status, verdict["valid"]) == (200, True)

    # Altered: the credit code of another company in the signed certificate.
    altered = decode(licence)
    altered.certificate.holder.display_id = "91330100MA00000000"
    status, verdict = await fed.call(
        "anhui", "POST", "/api/v1/certificates/verify", json={"certificate": to_text(altered)}
    )
    assert (status, verdict["valid"], verdict["reason"]) == (200, False, "bad_signature")

    # The gRPC counter gives the same verdicts, through the same contract.
    async with node_channel(fed.nodes["anhui"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        clerk = bearer(fed.tokens["anhui"])
        good = await stub.VerifyCertificate(
            counter_pb2.VerifyCertificateRequest(certificate=licence), metadata=clerk
        )
        bad = await stub.VerifyCertificate(
            counter_pb2.VerifyCertificateRequest(certificate=to_text(altered)), metadata=clerk
        )
    assert (good.valid, good.reason, bad.valid, bad.reason) == (True, "valid", False, "bad_signature")
    view = good.certificate
    assert (view.issuer, view.service_id, view.holder.id) == ("zhejiang", LICENCE, code)
    assert [(f.name, f.value) for f in view.fields] == [("credit_code", code)]
    assert view.HasField("valid_until_ms") == (cert["valid_until_ms"] is not None)

    # The same with nothing running but the command, from Anhui's manifest file.
    manifest = fed.configs["anhui"].anchor_manifest
    code_ok, out = cli(manifest, licence, capsys)
    assert code_ok == 0 and out.startswith("valid") and "zhejiang" in out
    code_bad, out = cli(manifest, to_text(altered), capsys)
    assert code_bad == 1 and out.startswith("refused: bad_signature")
    path = tmp_path / "licence.yrdc"
    path.write_bytes(decode(licence).SerializeToString())
    assert cli(manifest, str(path), capsys)[0] == 0


async def test_the_verify_api_refuses_bad_requests_and_the_operator(fed: Federation) -> None:
    status, problem = await fed.call(
        "anhui", "POST", "/api/v1/certificates/verify", json={"certificate": "%%%"}
    )
    assert (status, problem["field"], problem["code"]) == (400, "certificate", "invalid_certificate")
    # 15.3: only ASCII whitespace may come before the prefix; an ideographic space makes the
    # request neither text nor base64 at the API, as it makes it no text in the checks.
    status, problem = await fed.call(
        "anhui", "POST", "/api/v1/certificates/verify", json={"certificate": "\u3000YRDC1:AA"}
    )
    assert (status, problem["code"]) == (400, "invalid_certificate")
    status, problem = await fed.call(
        "anhui", "POST", "/api/v1/certificates/verify", json={"text": "YRDC1:AA"}
    )
    assert status == 400 and problem["type"] == "urn:yrd:problem:invalid_input"
    status, problem = await fed.call(
        "anhui", "POST", "/api/v1/certificates/verify", json={"certificate": "YRDC1:AA"}, user="operator"
    )
    assert (status, problem["code"]) == (403, "role_required")
    # The gRPC door refuses the same requests with the same codes.
    async with node_channel(fed.nodes["anhui"]) as ch:
        stub = counter_pb2_grpc.CounterServiceStub(ch)
        operator = bearer(await fed.login("anhui", "operator"))
        for text, who, expected in (
            ("%%%", bearer(fed.tokens["anhui"]), (grpc.StatusCode.INVALID_ARGUMENT, "invalid_certificate")),
            ("", bearer(fed.tokens["anhui"]), (grpc.StatusCode.INVALID_ARGUMENT, "bad_type")),
            ("YRDC1:AA", operator, (grpc.StatusCode.PERMISSION_DENIED, "role_required")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.VerifyCertificate(
                    counter_pb2.VerifyCertificateRequest(certificate=text), metadata=who
                )
            assert (err.value.code(), grpc_reason(err.value)) == expected, err.value.details()
            assert who is operator or "(field certificate)" in (err.value.details() or "")
    # Garbage that is well-formed as a request is a verdict, not an error.
    status, verdict = await fed.call(
        "anhui", "POST", "/api/v1/certificates/verify", json={"certificate": "YRDC1:AA"}
    )
    assert (status, verdict["valid"], verdict["reason"]) == (200, False, "malformed")
    assert verdict["reason"] in CERTIFICATE_REASONS
