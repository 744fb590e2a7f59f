"""Signatures in the Standard Webhooks format (standardwebhooks.com), for the completion
webhooks and the `http` task's calls: a receiver verifies them with an off-the-shelf library
(`standardwebhooks` on PyPI and npm) given the same secret. Pure: no I/O.

    webhook-id: <message id, the same on every retry of one message>
    webhook-timestamp: <integer seconds since the epoch>
    webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

The key is the secret's bytes after `whsec_` in base64 (the format those libraries read and
`jobserver` suggests); a secret without that prefix is used as its UTF-8 bytes, which a
receiver's library takes as `whsec_` + base64 of the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret; ValueError for one that would sign with an empty key (a
    signature anyone could make) or a `whsec_` one that is not base64."""
    if secret.startswith(PREFIX):
        encoded = secret.removeprefix(PREFIX)
        try:  # validate: left to itself b64decode drops what is not base64, quietly
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ secret must be base64 after its prefix") from None
    else:
        key = secret.encode()
    if not key:
        raise ValueError("the secret is empty")
    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
    }
