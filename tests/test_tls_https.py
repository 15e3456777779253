"""HTTPS on the counter front when node.toml names a certificate and key."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import aiohttp
import pytest

from node.app import build_node
from node.trust.tls import create_tls_identity
from simulations.local_federation import PROVINCES, prepare
from tests.support.federation import allow_all_specs


async def test_the_counter_front_serves_https_when_configured(tmp_path: Path) -> None:
    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    create_tls_identity("counter.jiangsu", cert, key, datetime.datetime.now(datetime.UTC))
    specs = allow_all_specs(tmp_path, [p for p in PROVINCES if p.node_id == "jiangsu"])
    extra = {"transport": {"https_cert": str(cert), "https_key": str(key)}}
    (config,) = prepare(tmp_path / "nodes", specs, now_ms=1_767_225_600_000, extra=extra)
    node = build_node(config)
    await node.start()
    try:
        assert node.http_url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        trusted.check_hostname = False  # the test certificate names no address
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{node.http_url}/api/v1/openapi.json", ssl=trusted) as r:
                assert r.status == 200
            plain = node.http_url.replace("https://", "http://", 1)
            with pytest.raises(aiohttp.ClientError):  # plain HTTP on the HTTPS port gets nothing
                async with http.get(f"{plain}/api/v1/openapi.json") as r:
                    await r.read()
    finally:
        await node.stop()
