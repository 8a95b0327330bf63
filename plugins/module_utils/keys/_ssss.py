# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the arithmetic of the ``ssss`` scheme (GF(2^n), diffusion, split and combine)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import re
import secrets

# --------------------------------------------------------------------------
# GF(2^n) and the ssss format
# --------------------------------------------------------------------------

# Coefficients of irreducible polynomials x^n + x^a + x^b + x^c + 1 over GF(2),
# n = 8, 16, ..., 1024: the table of ssss.c 0.5 (from HP Labs report HPL-98-135).
_IRRED_COEFF = (
    4, 3, 1, 5, 3, 1, 4, 3, 1, 7, 3, 2, 5, 4, 3, 5, 3, 2, 7, 4, 2, 4, 3, 1, 10, 9, 3, 9, 4, 2, 7, 6, 2, 10, 9,
    6, 4, 3, 1, 5, 4, 3, 4, 3, 1, 7, 2, 1, 5, 3, 2, 7, 4, 2, 6, 3, 2, 5, 3, 2, 15, 3, 2, 11, 3, 2, 9, 8, 7, 7,
    2, 1, 5, 3, 2, 9, 3, 1, 7, 3, 1, 9, 8, 3, 9, 4, 2, 8, 5, 3, 15, 14, 10, 10, 5, 2, 9, 6, 2, 9, 3, 2, 9, 5,
    2, 11, 10, 1, 7, 3, 2, 11, 2, 1, 9, 7, 4, 4, 3, 1, 8, 3, 1, 7, 4, 1, 7, 2, 1, 13, 11, 6, 5, 3, 2, 7, 3, 2,
    8, 7, 5, 12, 3, 2, 13, 10, 6, 5, 3, 2, 5, 3, 2, 9, 5, 2, 9, 7, 2, 13, 4, 3, 4, 3, 1, 11, 6, 4, 18, 9, 6,
    19, 18, 13, 11, 3, 2, 15, 9, 6, 4, 3, 1, 16, 5, 2, 15, 14, 6, 8, 5, 2, 15, 11, 2, 11, 6, 2, 7, 5, 3, 8,
    3, 1, 19, 16, 9, 11, 9, 6, 15, 7, 6, 13, 4, 3, 14, 13, 3, 13, 6, 3, 9, 5, 2, 19, 13, 6, 19, 10, 3, 11,
    6, 5, 9, 2, 1, 14, 3, 2, 13, 3, 1, 7, 5, 4, 11, 9, 8, 11, 6, 5, 23, 16, 9, 19, 14, 6, 23, 10, 2, 8, 3,
    2, 5, 4, 3, 9, 6, 4, 4, 3, 2, 13, 8, 6, 13, 11, 1, 13, 10, 3, 11, 6, 5, 19, 17, 4, 15, 14, 7, 13, 9, 6,
    9, 7, 3, 9, 7, 1, 14, 3, 2, 11, 8, 2, 11, 6, 4, 13, 5, 2, 11, 5, 1, 11, 4, 1, 19, 10, 3, 21, 10, 6, 13,
    3, 1, 15, 7, 5, 19, 18, 10, 7, 5, 3, 12, 7, 2, 7, 5, 1, 14, 9, 6, 10, 3, 2, 15, 13, 12, 12, 11, 9, 16,
    9, 7, 12, 9, 3, 9, 5, 2, 17, 10, 6, 24, 9, 3, 17, 15, 13, 5, 4, 3, 19, 17, 8, 15, 6, 3, 19, 6, 1,
)  # fmt: skip


class GF2n:
    """The field GF(2^degree) as ssss builds it; elements are ints below 2^degree."""

    def __init__(self, degree: int) -> None:
        if degree < 8 or degree > 1024 or degree % 8:
            raise ValueError("ssss fields have 8 to 1024 bits in steps of 8, not %d" % degree)
        first = 3 * (degree // 8 - 1)
        a, b, c = _IRRED_COEFF[first : first + 3]
        self.degree = degree
        self.poly = (1 << degree) | (1 << a) | (1 << b) | (1 << c) | 1

    def mul(self, x: int, y: int) -> int:
        top = 1 << self.degree
        result = 0
        while y:
            if y & 1:
                result ^= x
            y >>= 1
            x <<= 1
            if x & top:
                x ^= self.poly
        return result

    def power(self, x: int, exponent: int) -> int:
        result = 1
        for _step in range(exponent):
            result = self.mul(result, x)
        return result

    def inverse(self, x: int) -> int:
        if not x:
            raise ZeroDivisionError("0 has no inverse")
        u, v, z, g = x, self.poly, 1, 0
        while u != 1:
            shift = u.bit_length() - v.bit_length()
            if shift < 0:
                u, v, z, g = v, u, g, z
                shift = -shift
            u ^= v << shift
            z ^= g << shift
        return z


_DELTA = 0x9E3779B9


_MASK = 0xFFFFFFFF


def _encipher(v0: int, v1: int) -> tuple[int, int]:
    total = 0
    for _round in range(32):
        v0 = (v0 + ((((v1 << 4) & _MASK ^ (v1 >> 5)) + v1 & _MASK) ^ total)) & _MASK
        total = (total + _DELTA) & _MASK
        v1 = (v1 + ((((v0 << 4) & _MASK ^ (v0 >> 5)) + v0 & _MASK) ^ total)) & _MASK
    return v0, v1


def _decipher(v0: int, v1: int) -> tuple[int, int]:
    total = 0xC6EF3720
    for _round in range(32):
        v1 = (v1 - ((((v0 << 4) & _MASK ^ (v0 >> 5)) + v0 & _MASK) ^ total)) & _MASK
        total = (total - _DELTA) & _MASK
        v0 = (v0 - ((((v1 << 4) & _MASK ^ (v1 >> 5)) + v1 & _MASK) ^ total)) & _MASK
    return v0, v1


def _slice(data: bytearray, index: int, length: int, block) -> None:
    positions = [(index + k) % length for k in range(8)]
    v0 = int.from_bytes(bytes(data[p] for p in positions[:4]), "big")
    v1 = int.from_bytes(bytes(data[p] for p in positions[4:]), "big")
    v0, v1 = block(v0, v1)
    for p, byte in zip(positions, v0.to_bytes(4, "big") + v1.to_bytes(4, "big")):
        data[p] = byte


def diffuse(value: int, degree: int, decode: bool = False) -> int:
    """ssss's diffusion layer (``encode_mpz``): a keyless XTEA-based permutation of the field element.

    Reproduces GMP's ``mpz_export(v, &t, -1, 2, 1, 0, x)`` byte order (16-bit
    words, least significant word first, each big-endian), including ssss's
    shuffle of the odd byte when ``degree % 16 == 8``.
    """
    words = (degree + 8) // 16
    length = degree // 8
    data = bytearray(2 * words)
    for k in range(words):
        word = (value >> (16 * k)) & 0xFFFF
        data[2 * k] = word >> 8
        data[2 * k + 1] = word & 0xFF
    odd = degree % 16 == 8
    if odd:
        data[length - 1] = data[length]
    if decode:
        for index in range(40 * length - 2, -1, -2):
            _slice(data, index, length, _decipher)
    else:
        for index in range(0, 40 * length, 2):
            _slice(data, index, length, _encipher)
    if odd:
        data[length] = data[length - 1]
        data[length - 1] = 0
    result = 0
    for k in range(words):
        result |= ((data[2 * k] << 8) | data[2 * k + 1]) << (16 * k)
    return result


def ssss_encoding(secret: bytes) -> str:
    """``ascii`` when ``ssss-split``/``ssss-combine`` can carry the secret as text (printable ASCII), else ``hex`` (-x)."""
    return "ascii" if secret and all(32 <= byte < 127 for byte in secret) else "hex"


def ssss_split(secret: bytes, threshold: int, count: int, token: str = "") -> list[str]:
    """Share lines exactly as ``ssss-split -t THRESHOLD -n COUNT [-w TOKEN] [-x]`` prints them."""
    degree = 8 * len(secret)
    field = GF2n(degree)
    coefficients = [int.from_bytes(secret, "big")]
    if degree >= 64:
        coefficients[0] = diffuse(coefficients[0], degree)
    coefficients.extend(secrets.randbits(degree) for _coefficient in range(threshold - 1))
    width = len(str(count))
    lines = []
    for x in range(1, count + 1):
        # ssss's horner() starts from x, not 0: every share carries an extra x^t term.
        y = x
        for coefficient in reversed(coefficients[1:]):
            y = field.mul(y ^ coefficient, x)
        y ^= coefficients[0]
        prefix = "%s-" % token if token else ""
        lines.append("%s%0*d-%0*x" % (prefix, width, x, degree // 4, y))
    return lines


_SSSS_LINE = re.compile(r"^(?:([^\s-]{1,128})-)?0*(\d{1,3})-([0-9a-fA-F]+)\Z")


def parse_ssss_line(text: str) -> tuple[str, int, int, int] | None:
    """``(token, index, value, degree)`` of one ``[TOKEN-]INDEX-HEX`` line, or None if it is not one."""
    match = _SSSS_LINE.match(text.strip())
    if not match:
        return None
    token, index, value = match.group(1) or "", int(match.group(2)), match.group(3)
    degree = 4 * len(value)
    if index < 1 or degree < 8 or degree > 1024 or degree % 8:
        return None
    return token, index, int(value, 16), degree


def _lagrange_at(field: GF2n, points: list[tuple[int, int]], at: int) -> int:
    total = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _yj) in enumerate(points):
            if i != j:
                numerator = field.mul(numerator, at ^ xj)
                denominator = field.mul(denominator, xi ^ xj)
        total ^= field.mul(yi, field.mul(numerator, field.inverse(denominator)))
    return total


def _ssss_points(field: GF2n, shares: list[tuple[int, int]], threshold: int) -> list[tuple[int, int]]:
    """Remove each share's extra x^t term: then they lie on a plain polynomial of degree t-1."""
    return [(x, y ^ field.power(x, threshold)) for x, y in shares]


def ssss_combine(shares: list[tuple[int, int]], threshold: int, degree: int) -> bytes:
    """The secret from exactly ``threshold`` ``(index, value)`` pairs, as ``ssss-combine -t THRESHOLD`` computes it."""
    field = GF2n(degree)
    value = _lagrange_at(field, _ssss_points(field, shares, threshold), 0)
    if degree >= 64:
        value = diffuse(value, degree, decode=True)
    return value.to_bytes(degree // 8, "big")


def ssss_consistent(shares: list[tuple[int, int]], threshold: int, degree: int, other: tuple[int, int]) -> bool:
    """Whether ``other`` lies on the polynomial through ``shares`` (exactly ``threshold`` of them)."""
    field = GF2n(degree)
    x, y = other
    expected = _lagrange_at(field, _ssss_points(field, shares, threshold), x) ^ field.power(x, threshold)
    return expected == y
