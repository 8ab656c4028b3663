"""HS256 JSON Web Tokens for the CAP Verifier API stand-in.

The API accepts ``Authorization: Bearer <JWT>`` where the JWT is signed with
HMAC-SHA256 under a shared secret (the raw bytes of the secret file, with
surrounding white space stripped). Only ``alg: HS256`` is accepted; ``none`` and
every other algorithm are refused before any claim is looked at.

Required claims: ``aud`` (must contain ``cap-verifier-api``), ``exp`` and
``iat``. ``nbf`` is honoured when present. ``sub`` and ``scope`` are carried
for logging and scope checks.

CLI, used by the sandbox service manager to hand tokens to the automation:

    python -m sandbox.auth mint --secret-file FILE [--ttl SECONDS] [--subject S] [--scope S]

prints one token on stdout and nothing else.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import sys
import time

AUDIENCE = "cap-verifier-api"
ISSUER = "cap-sandbox"
ALGORITHM = "HS256"
DEFAULT_TTL_SECONDS = 3600
# Clock skew tolerated on exp, nbf and iat.
LEEWAY_SECONDS = 30
# Scopes understood by the API; a token minted without --scope carries all of them.
SCOPES = ("cap:read", "cap:write", "cap:restore")
DEFAULT_SCOPE = " ".join(SCOPES)
# RFC 7518 asks for at least 256 bits; 16 bytes is the floor this stand-in accepts.
MIN_SECRET_BYTES = 16
MAX_TOKEN_CHARS = 8192


class TokenError(Exception):
    """A token is missing, malformed, badly signed, expired or meant for someone else."""


class SecretError(Exception):
    """The JWT secret file cannot be used."""


def read_secret_file(path):
    """Raw secret bytes from a file, surrounding white space stripped."""
    try:
        with open(path, "rb") as handle:
            secret = handle.read().strip()
    except OSError as exc:
        raise SecretError("cannot read JWT secret file %s: %s" % (path, exc.strerror or exc))
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError("JWT secret in %s is %d bytes; at least %d are required"
                          % (path, len(secret), MIN_SECRET_BYTES))
    return secret


def _b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text, what):
    if not text or any(c not in _B64URL_CHARS for c in text):
        raise TokenError("token %s is not base64url" % what)
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("token %s is not base64url" % what)


_B64URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _json_segment(text, what):
    raw = _b64url_decode(text, what)
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise TokenError("token %s is not JSON" % what)
    if not isinstance(value, dict):
        raise TokenError("token %s is not a JSON object" % what)
    return value


def _signature(secret, signing_input):
    return hmac.new(secret, signing_input, hashlib.sha256).digest()


def encode(claims, secret, header=None):
    """Sign a claims dict as a compact HS256 JWT (header may be overridden for tests)."""
    head = header if header is not None else {"alg": ALGORITHM, "typ": "JWT"}
    signing_input = ("%s.%s" % (
        _b64url_encode(json.dumps(head, separators=(",", ":"), sort_keys=True).encode("utf-8")),
        _b64url_encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8")),
    )).encode("ascii")
    return "%s.%s" % (signing_input.decode("ascii"), _b64url_encode(_signature(secret, signing_input)))


def mint_token(secret, subject="cap-sre", ttl_seconds=DEFAULT_TTL_SECONDS, scope=DEFAULT_SCOPE,
               audience=AUDIENCE, now=None):
    """A fresh HS256 token for the API: sub, aud, iss, iat, nbf, exp and scope claims."""
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": subject,
        "aud": audience,
        "iss": ISSUER,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_seconds),
        "scope": scope,
    }
    return encode(claims, secret)


def _numeric_claim(claims, name, required):
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenError("token has no %s claim" % name)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenError("token claim %s is not a number" % name)
    return value


def verify_token(token, secret, audience=AUDIENCE, now=None, leeway=LEEWAY_SECONDS):
    """Check a compact JWT and return its claims; raise TokenError on any problem.

    Checks, in order: shape, header (alg must be HS256), signature (constant-time
    comparison), then exp, nbf, iat and aud.
    """
    if not isinstance(token, str) or not token:
        raise TokenError("no token")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("token is too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("token is not a compact JWT (header.payload.signature)")
    header = _json_segment(parts[0], "header")
    if header.get("alg") != ALGORITHM:
        raise TokenError("token algorithm %r is not accepted; only HS256 is"
                         % (header.get("alg"),))
    if "typ" in header and str(header["typ"]).upper() != "JWT":
        raise TokenError("token type %r is not JWT" % (header.get("typ"),))
    if "crit" in header:
        raise TokenError("token carries critical header parameters this API does not understand")
    signature = _b64url_decode(parts[2], "signature")
    expected = _signature(secret, ("%s.%s" % (parts[0], parts[1])).encode("ascii"))
    if not hmac.compare_digest(signature, expected):
        raise TokenError("token signature does not verify")
    claims = _json_segment(parts[1], "payload")
    current = time.time() if now is None else now
    exp = _numeric_claim(claims, "exp", True)
    if current >= exp + leeway:
        raise TokenError("token expired")
    nbf = _numeric_claim(claims, "nbf", False)
    if nbf is not None and current + leeway < nbf:
        raise TokenError("token is not valid yet (nbf)")
    iat = _numeric_claim(claims, "iat", True)
    if current + leeway < iat:
        raise TokenError("token was issued in the future (iat)")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise TokenError("token audience does not include %s" % audience)
    return claims


def token_scopes(claims):
    """The set of scopes a verified token grants (space-separated 'scope' claim)."""
    scope = claims.get("scope", "")
    if isinstance(scope, list):
        return {str(s) for s in scope}
    if not isinstance(scope, str):
        return set()
    return set(scope.split())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sandbox.auth",
                                     description="Mint HS256 tokens for the CAP Verifier API stand-in.")
    sub = parser.add_subparsers(dest="command", required=True)
    mint = sub.add_parser("mint", help="print a fresh token on stdout")
    mint.add_argument("--secret-file", required=True, help="file holding the shared HS256 secret")
    mint.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="lifetime in seconds")
    mint.add_argument("--subject", default="cap-sre", help="sub claim")
    mint.add_argument("--scope", default=DEFAULT_SCOPE,
                      help="space-separated scopes (default: %s)" % DEFAULT_SCOPE)
    args = parser.parse_args(argv)
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    try:
        secret = read_secret_file(args.secret_file)
    except SecretError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    print(mint_token(secret, subject=args.subject, ttl_seconds=args.ttl, scope=args.scope))
    return 0


if __name__ == "__main__":
    sys.exit(main())
