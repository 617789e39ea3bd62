"""Agent identities: did:key Ed25519 keys, canonical JSON (RFC 8785) and attestation signatures.

An attestation's signature covers its canonical JSON, so any party can check it with nothing
but the attester's DID: a `did:key` carries its public key (multibase base58btc of the
multicodec prefix 0xed01 and the 32 key bytes).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
B58_INDEX = {c: i for i, c in enumerate(B58)}
ED25519_MULTICODEC = b"\xed\x01"
DID_KEY = "did:key:"


class IdentityError(ValueError):
    """A DID, key or signature that cannot be used."""


def b58encode(raw: bytes) -> str:
    number = int.from_bytes(raw, "big")
    out = ""
    while number:
        number, rem = divmod(number, 58)
        out = B58[rem] + out
    pad = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * pad + out


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in B58_INDEX:
            raise IdentityError("not base58btc")
        number = number * 58 + B58_INDEX[char]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def did_key_for(public_key: bytes) -> str:
    return DID_KEY + "z" + b58encode(ED25519_MULTICODEC + public_key)


def public_key_of(did: str) -> bytes | None:
    """The Ed25519 key a did:key names; None for other DID methods (their key is registered)."""
    if not did.startswith(DID_KEY):
        return None
    multibase = did[len(DID_KEY) :]
    if not multibase.startswith("z") or len(multibase) > 60:
        raise IdentityError("a did:key must be multibase base58btc (z...)")
    raw = b58decode(multibase[1:])
    if not raw.startswith(ED25519_MULTICODEC) or len(raw) != 34:
        raise IdentityError("only Ed25519 did:key identities are supported")
    return raw[2:]


def _number(value: float | int) -> str:
    """A number as ECMAScript prints it (RFC 8785 section 3.2.2.3): JSON numbers are doubles."""
    if isinstance(value, bool):
        raise IdentityError("booleans are not numbers")
    if isinstance(value, int) and abs(value) <= 2**53:
        return str(value)
    try:
        number = float(value)
    except OverflowError as exc:
        raise IdentityError("the number is out of range") from exc
    if not math.isfinite(number):
        raise IdentityError("numbers must be finite")
    if number == 0:
        return "0"
    shortest = repr(number)  # the shortest round-trip digits, as ECMAScript uses
    mantissa, _, exp_text = shortest.partition("e")
    decimal = Decimal(mantissa).scaleb(int(exp_text) if exp_text else 0)
    if 1e-6 <= abs(number) < 1e21:
        text = format(decimal, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    digits, _, power = format(decimal.normalize(), "e").partition("e")
    return f"{digits}e{'+' if int(power) > 0 else '-'}{abs(int(power))}"


def canonical_json(value: Any) -> str:
    """RFC 8785 canonical JSON: sorted keys, no whitespace, ECMAScript numbers."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: str(k).encode("utf-16-be"))
        members = (
            f"{json.dumps(str(k), ensure_ascii=False)}:{canonical_json(value[k])}" for k in keys
        )
        return "{" + ",".join(members) + "}"
    raise IdentityError(f"{type(value).__name__} has no JSON form")


def attestation_payload(
    task_id: str,
    by_did: str,
    type_: str,
    score: float,
    confidence: float,
    evidence_ref: str | None,
) -> bytes:
    """The bytes an attester signs: who says what about which task."""
    return canonical_json(
        {
            "task_id": task_id,
            "by_did": by_did,
            "type": type_,
            "score": score,
            "confidence": confidence,
            "evidence_ref": evidence_ref,
        }
    ).encode()


def decode_signature(text: str) -> bytes:
    """A base64 or base64url signature (padding optional) of 64 bytes."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IdentityError("the signature is not base64") from exc
    if len(raw) != 64:
        raise IdentityError("an Ed25519 signature is 64 bytes")
    return raw


def verify(public_key: bytes, signature: bytes, payload: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def sign(private_key: Ed25519PrivateKey, payload: bytes) -> str:
    """A base64url signature (for clients, tests and the sample events)."""
    return base64.urlsafe_b64encode(private_key.sign(payload)).decode().rstrip("=")


def new_identity(seed: bytes | None = None) -> tuple[Ed25519PrivateKey, str]:
    """A key pair and its did:key (a fixed 32-byte seed gives a fixed identity)."""
    from cryptography.hazmat.primitives import serialization

    key = Ed25519PrivateKey.from_private_bytes(seed) if seed else Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return key, did_key_for(public)
