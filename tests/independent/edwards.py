"""Ed25519 public key to X25519 public key, computed from the formulas of docs/protocol.md 5.1.

Plain integer arithmetic on edwards25519 (RFC 8032 section 5.1), so the derivation is checked
against the document's formula rather than only against libsodium, which the document names.
Slow and variable-time: for public keys in tests only.
"""

from __future__ import annotations

P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
L = 2**252 + 27742317777372353535851937790883648493
SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int]
IDENTITY: Point = (0, 1)


def decode_point(encoded: bytes) -> Point | None:
    """RFC 8032 5.1.3: None when y >= p, when x^2 has no root, or for x = 0 with the sign bit set."""
    if len(encoded) != 32:
        return None
    number = int.from_bytes(encoded, "little")
    sign, y = number >> 255, number & ((1 << 255) - 1)
    if y >= P:
        return None
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if v * x * x % P == (-u) % P:
        x = x * SQRT_M1 % P
    if v * x * x % P != u:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x, y


def add(a: Point, b: Point) -> Point:
    """The complete twisted Edwards addition law for a = -1."""
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, -1, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P
    return x3, y3


def multiply(scalar: int, point: Point) -> Point:
    result, addend = IDENTITY, point
    while scalar:
        if scalar & 1:
            result = add(result, addend)
        addend = add(addend, addend)
        scalar >>= 1
    return result


def x25519_public_from_ed25519(public_key: bytes) -> bytes | None:
    """u = (1 + y) / (1 - y); None where the document says libsodium refuses the key."""
    point = decode_point(public_key)
    if point is None or multiply(8, point) == IDENTITY or multiply(L, point) != IDENTITY:
        return None
    y = point[1]
    u = (1 + y) * pow(1 - y, -1, P) % P
    return u.to_bytes(32, "little")
