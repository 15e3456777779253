"""Regenerate the Python wire package from proto/ (``make protos``).

Generated modules sit beside their .proto files so that ``yrd.peer.v1.peer_pb2`` is
importable from the ``proto`` source root. ``--check`` regenerates into a scratch
directory and fails when the committed files differ, which is how lint catches
stale stubs.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--mypy_out={out}",
        f"--plugin=protoc-gen-mypy_grpc={plugin.with_name('protoc-gen-mypy_grpc')}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for directory in {p.parent for p in out.rglob("*_pb2.py")}:
        node = directory
        while node != out:
            (node / "__init__.py").touch()
            node = node.parent
    (out / "yrd" / "py.typed").touch()


def generated_files(root: Path) -> set[Path]:
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and (p.name.endswith(GENERATED_SUFFIXES) or p.name in ("__init__.py", "py.typed"))
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when committed stubs are stale")
    args = parser.parse_args()
    if not args.check:
        generate(PROTO)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        want, have = generated_files(fresh), generated_files(PROTO)
        stale = sorted(str(p) for p in want ^ have)
        stale += sorted(str(p) for p in want & have if not filecmp.cmp(fresh / p, PROTO / p, shallow=False))
        if stale:
            print("generated protobuf code is stale; run `make protos`:", *stale, sep="\n  ")
            return 1
    print("generated protobuf code is fresh")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
