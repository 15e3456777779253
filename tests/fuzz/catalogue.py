"""Catalogue loader and entry verification: any TOML file gives services that pass every
structural check or a ConfigError naming the key; any damaged signed entry is refused as
``catalogue_entry_invalid`` unless its signed definition is untouched.

Run long: ``python -m tests.fuzz.catalogue -atheris_runs=100000``.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from google.protobuf.message import DecodeError

from core.errors import ConfigError, InvalidInput, NotFound
from core.keys import NodeKey
from registry.catalogue import (
    SAMPLES_DIR,
    SignedServiceEntry,
    definition_problems,
    load_catalogue_file,
    sign_entry,
    verify_entry,
)
from tests.fuzz import MODES, mutate, run

NOW = 1_767_225_600_000
SAMPLES = sorted(SAMPLES_DIR.glob("*.toml"))
SEEDS = [p.read_bytes() for p in SAMPLES]
KEY = NodeKey.from_seed(hashlib.sha256(b"catalogue-fuzz").digest())
_DIR = Path(tempfile.mkdtemp(prefix="yrd-fuzz-catalogue-"))


class Keys:
    """One member, ``shanghai``, with one key."""

    def verify_key(self, node_id: str, key_id: str, at_ms: int) -> bytes:
        if (node_id, key_id) != ("shanghai", KEY.key_id):
            raise NotFound(f"no key {key_id!r} of {node_id!r}")
        return KEY.public_key


def serves(node_id: str, division: str) -> bool:
    return node_id == "shanghai" and division.startswith("31")


def _first_shanghai_definition() -> SignedServiceEntry:
    _, definitions = load_catalogue_file(SAMPLES_DIR / "shanghai.toml")
    return sign_entry(definitions[0], "shanghai", KEY)


ENTRY = _first_shanghai_definition()


def check_file(data: bytes) -> None:
    path = _DIR / "catalogue.toml"
    path.write_bytes(data)
    try:
        _, definitions = load_catalogue_file(path)
    except ConfigError as e:
        assert e.field, e
        return
    ids = [d.service_id for d in definitions]
    assert len(set(ids)) == len(ids)
    for defn in definitions:
        assert next(definition_problems(defn), None) is None, defn


def check_entry(data: bytes) -> None:
    try:
        entry = SignedServiceEntry.FromString(data)
    except DecodeError:
        return  # refused with the rest of its catalogue by the peer-body parser
    try:
        verify_entry(entry, Keys(), serves, NOW)
    except InvalidInput as e:
        assert e.code == "catalogue_entry_invalid" and e.field, e
        return
    assert entry.definition == ENTRY.definition, "an altered definition was accepted"


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    mode, which = data[0] % MODES, (data[0] // MODES) % (len(SEEDS) + 1)
    if which == len(SEEDS):
        check_entry(mutate(ENTRY.SerializeToString(), mode, data[1:]))
    else:
        check_file(mutate(SEEDS[which], mode, data[1:]))


if __name__ == "__main__":
    run(fuzz_one)
