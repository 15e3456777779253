"""Policy bundle loader and its detached signature: any bytes give a Bundle or a ConfigError
naming file, line and field (the signature: a ConfigError with a code), never another exception.

Run long: ``python -m tests.fuzz.policy -atheris_runs=100000``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from core.errors import ConfigError
from core.keys import NodeKey
from policies.schema import parse_bundle
from policies.signing import sign_bundle_bytes, verify_bundle_bytes
from tests.fuzz import MODES, mutate, run

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "policies" / "bundles"
SHIPPED = sorted(p for p in BUNDLES_DIR.glob("*.yaml") if not p.name.endswith(".tests.yaml"))
SEEDS = [p.read_bytes() for p in SHIPPED]
SOURCE = "fuzz.yaml"
KEY = NodeKey.from_seed(hashlib.sha256(b"policy-fuzz").digest())
SIG_CODES = ("bundle_sig_malformed", "bundle_wrong_key", "bundle_bad_signature")


def check_bundle(data: bytes) -> None:
    try:
        bundle = parse_bundle(data, SOURCE)
    except ConfigError as e:
        assert e.code == "bundle_invalid", e
        assert e.field, e
        assert e.extra["file"] == SOURCE and e.extra["line"] >= 1, e.extra
        text = data.decode("utf-8", errors="replace")
        # str.splitlines breaks on everything YAML does (\r, \x85, \u2028...) and a little more.
        assert e.extra["line"] <= len(text.splitlines()) + 1, (e.extra["line"], data)
        return
    assert bundle.digest == hashlib.sha256(data).hexdigest()
    assert all(rule.line >= 1 for rule in bundle.rules)


def check_signature(data: bytes, sig: bytes) -> None:
    try:
        verify_bundle_bytes(data, sig, KEY.public_key, SOURCE)
    except ConfigError as e:
        assert e.code in SIG_CODES, e
        return
    # Accepted: whatever the JSON spelling, it carries the signer's own signature.
    true = json.loads(sign_bundle_bytes(data, KEY))["signature"]
    assert base64.b64decode(json.loads(sig)["signature"]) == base64.b64decode(true)


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    mode, which = data[0] % MODES, (data[0] // MODES) % (len(SEEDS) + 1)
    if which == len(SEEDS):
        # The signature file of the first bundle, damaged.
        check_signature(SEEDS[0], mutate(sign_bundle_bytes(SEEDS[0], KEY), mode, data[1:]))
        return
    check_bundle(mutate(SEEDS[which], mode, data[1:]))


if __name__ == "__main__":
    run(fuzz_one)
