"""Fuzz harnesses: one module per target, each with a ``fuzz_one(data)`` oracle.

The same oracle is driven two ways. The default suite (tests/test_fuzz_*.py) feeds it a few
hundred hypothesis examples; ``python -m tests.fuzz.<target> -atheris_runs=N`` (or ``make
fuzz``) runs it under atheris, a coverage-guided fuzzer, for as long as one cares to wait.
An oracle raises AssertionError, or lets an unexpected exception escape, only on a real bug.

``fuzz_one`` reads its first byte as a mode, so a coverage-guided fuzzer that knows nothing
of protobuf or YAML still works near valid inputs: mode 0 parses the raw rest, the other
modes edit a valid seed with the rest (see :func:`mutate`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fuzz",
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)
FUZZ = settings.get_profile("fuzz")


def mutate(seed: bytes, mode: int, payload: bytes) -> bytes:
    """``seed`` edited by ``payload``: overwrite bytes (1), splice in (2), cut out (3), truncate (4).

    Each edit is driven by payload bytes so that a coverage-guided fuzzer's own mutations
    of the payload steer where the seed is damaged.
    """
    if not seed or mode == 0:
        return payload
    out = bytearray(seed)
    if mode == 1:
        for i in range(0, len(payload) - 2, 3):
            out[int.from_bytes(payload[i : i + 2], "big") % len(out)] = payload[i + 2]
    elif mode == 2:
        at = int.from_bytes(payload[:2], "big") % (len(out) + 1) if len(payload) >= 2 else 0
        out[at:at] = payload[2:]
    elif mode == 3:
        at = int.from_bytes(payload[:2], "big") % len(out) if len(payload) >= 2 else 0
        del out[at : at + (payload[2] if len(payload) > 2 else 1)]
    else:
        del out[int.from_bytes(payload[:2], "big") % len(out) if len(payload) >= 2 else 0 :]
    return bytes(out)


MODES = 5


INSTRUMENTED = ("core", "registry", "policies", "node.trust", "node.delivery", "yaml", "tomllib", "json")
"""Modules whose code guides the fuzzer. Instrumenting everything loaded (grpc, sqlalchemy,
hypothesis...) takes minutes before the first input; these are what the harnesses exercise."""


def _instrument(prefixes: tuple[str, ...]) -> int:
    import gc
    import types

    import atheris

    count = 0
    packages = tuple(p + "." for p in prefixes)
    for obj in gc.get_objects():
        module = getattr(obj, "__module__", None) or ""
        if isinstance(obj, types.FunctionType) and (module in prefixes or module.startswith(packages)):
            atheris.instrument_func(obj)
            count += 1
    return count


def run(fuzz_one: Callable[[bytes], None]) -> None:
    """Run ``fuzz_one`` under atheris with ``sys.argv`` as libFuzzer flags.

    Without atheris (it is the optional ``fuzz`` extra), hypothesis drives the same oracle
    through ``fuzz_one_input`` for ``-atheris_runs`` random buffers: no coverage guidance,
    but still a long random run.
    """
    try:
        import atheris
    except ImportError:
        _run_without_atheris(fuzz_one)
        return
    print(f"instrumented {_instrument(INSTRUMENTED)} functions", file=sys.stderr)
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()


def _run_without_atheris(fuzz_one: Callable[[bytes], None]) -> None:
    import os

    from hypothesis import given
    from hypothesis import strategies as st

    runs = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("-atheris_runs=")), 10_000)

    @given(st.binary(max_size=4096))
    def one(data: bytes) -> None:
        fuzz_one(data)

    print(f"atheris is not installed; {runs} random inputs through hypothesis instead", file=sys.stderr)
    for _ in range(runs):
        one.hypothesis.fuzz_one_input(os.urandom(4096))  # type: ignore[attr-defined]
