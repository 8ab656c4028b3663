"""HS256 tokens of the API stand-in (sandbox/auth.py)."""

from __future__ import annotations

import base64
import json

import pytest

from sandbox import auth

SECRET = b"unit-test-secret-with-some-length"
NOW = 1_750_000_000


def test_minted_tokens_verify_and_carry_the_claims():
    token = auth.mint_token(SECRET, subject="restore-bot", ttl_seconds=300, scope="cap:restore", now=NOW)
    claims = auth.verify_token(token, SECRET, now=NOW + 10)
    assert claims["sub"] == "restore-bot"
    assert claims["aud"] == "cap-verifier-api"
    assert claims["exp"] == NOW + 300 and claims["iat"] == NOW
    assert auth.token_scopes(claims) == {"cap:restore"}
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}


@pytest.mark.parametrize("token, fragment", [
    (lambda: auth.mint_token(b"x" * 32, now=NOW), "signature"),
    (lambda: auth.mint_token(SECRET, ttl_seconds=60, now=NOW - 3600), "expired"),
    (lambda: auth.mint_token(SECRET, audience="other", now=NOW), "audience"),
    (lambda: auth.encode({"aud": auth.AUDIENCE, "iat": NOW, "exp": NOW + 60}, SECRET,
                         header={"alg": "none"}), "algorithm"),
    (lambda: auth.encode({"aud": auth.AUDIENCE, "iat": NOW, "exp": NOW + 60}, SECRET,
                         header={"alg": "HS384"}), "algorithm"),
    (lambda: auth.encode({"aud": auth.AUDIENCE, "iat": NOW}, SECRET), "exp"),
    (lambda: auth.encode({"aud": auth.AUDIENCE, "exp": NOW + 60}, SECRET), "iat"),
    (lambda: auth.encode({"aud": auth.AUDIENCE, "iat": NOW, "exp": "soon"}, SECRET), "not a number"),
    (lambda: auth.encode({"aud": auth.AUDIENCE, "iat": NOW, "exp": NOW + 60, "nbf": NOW + 600},
                         SECRET), "nbf"),
    (lambda: auth.encode({"aud": auth.AUDIENCE, "iat": NOW, "exp": NOW + 60}, SECRET,
                         header={"alg": "HS256", "crit": ["b64"]}), "critical"),
    (lambda: "a.b", "compact"),
    (lambda: "", "no token"),
    (lambda: "x" * 9000, "too long"),
    (lambda: "eyJhbGciOiJIUzI1NiJ9.e30.***", "base64url"),
])
def test_bad_tokens_raise_token_error(token, fragment):
    with pytest.raises(auth.TokenError) as info:
        auth.verify_token(token(), SECRET, now=NOW)
    assert fragment in str(info.value)


def test_unsigned_token_is_refused_even_with_an_empty_signature():
    body = base64.urlsafe_b64encode(json.dumps(
        {"aud": auth.AUDIENCE, "iat": NOW, "exp": NOW + 60}).encode()).rstrip(b"=").decode()
    head = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    with pytest.raises(auth.TokenError, match="algorithm"):
        auth.verify_token("%s.%s." % (head, body), SECRET, now=NOW)


def test_leeway_and_audience_lists():
    token = auth.encode({"aud": ["x", auth.AUDIENCE], "iat": NOW, "exp": NOW + 60}, SECRET)
    assert auth.verify_token(token, SECRET, now=NOW + 60 + auth.LEEWAY_SECONDS - 1)
    with pytest.raises(auth.TokenError):
        auth.verify_token(token, SECRET, now=NOW + 60 + auth.LEEWAY_SECONDS)


def test_secret_file_is_stripped_and_must_be_long_enough(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(b"  " + SECRET + b"\n")
    assert auth.read_secret_file(str(good)) == SECRET
    short = tmp_path / "short"
    short.write_bytes(b"short\n")
    with pytest.raises(auth.SecretError, match="at least 16"):
        auth.read_secret_file(str(short))
    with pytest.raises(auth.SecretError, match="cannot read"):
        auth.read_secret_file(str(tmp_path / "missing"))


def test_cli_prints_only_a_token(tmp_path, capsys):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    assert auth.main(["mint", "--secret-file", str(secret), "--ttl", "90", "--subject", "ci"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    claims = auth.verify_token(out.strip(), SECRET)
    assert claims["sub"] == "ci" and claims["exp"] - claims["iat"] == 90
    assert auth.token_scopes(claims) == set(auth.SCOPES)
    assert auth.main(["mint", "--secret-file", str(tmp_path / "missing")]) == 2
