"""Authentication: API keys (plain, hashed, from a file), Bearer parsing, HS256 and RS256 JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ferrousforge.api.auth import ANONYMOUS, Authenticator, JWTVerifier, KeyStore, Principal
from ferrousforge.errors import ConfigError, MissingExtra, Unauthorized

SECRET = "a-shared-secret-of-at-least-32-bytes!"


def key_id(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- API keys ---------------------------------------------------------------------------------


def test_plain_keys() -> None:
    authn = Authenticator(KeyStore(["k-one", "k-two"]))
    assert authn.enabled
    assert authn.authenticate(bearer("k-two")) == Principal(key_id("k-two"), "key")
    with pytest.raises(Unauthorized, match=r"^invalid API key$"):
        authn.authenticate(bearer("k-three"))


def test_principal_id_does_not_reveal_the_key() -> None:
    principal = Authenticator(KeyStore(["hunter2-very-secret"])).authenticate(
        bearer("hunter2-very-secret")
    )
    assert "hunter2" not in principal.id
    assert principal.id.startswith("key:") and len(principal.id) == 16


def test_hashed_keys_accept_the_key_they_hash() -> None:
    spec = KeyStore.hash("s3cret")
    assert spec == "sha256:" + hashlib.sha256(b"s3cret").hexdigest()
    authn = Authenticator(KeyStore([spec, "SHA256:" + "AB" * 32]))
    # The same id whether the key was configured plain or hashed.
    assert authn.authenticate(bearer("s3cret")) == Principal(key_id("s3cret"), "key")
    with pytest.raises(Unauthorized):
        authn.authenticate(bearer(spec))


def test_keys_file_with_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(
        f"# team keys\n\nalpha\r\n   # indented comment\n  {KeyStore.hash('beta')}  \n", "utf-8"
    )
    store = KeyStore(["gamma"], path)
    assert len(store) == 3
    authn = Authenticator(store)
    for key in ("alpha", "beta", "gamma"):
        assert authn.authenticate(bearer(key)).kind == "key"
    with pytest.raises(Unauthorized):
        authn.authenticate(bearer("# team keys"))


def test_bad_keys_file_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("alpha\n# ok\nsha256:abc\n", "utf-8")
    with pytest.raises(ConfigError, match=r"keys file .*keys line 3: a hashed key") as info:
        KeyStore(file=path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_key_with_whitespace_in_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("alpha beta\n", "utf-8")
    with pytest.raises(ConfigError, match="line 1: a key cannot contain whitespace"):
        KeyStore(file=path)


def test_unreadable_or_empty_keys_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"cannot read keys file {missing}"):
        KeyStore(file=missing)
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n\n", "utf-8")
    with pytest.raises(ConfigError, match="holds no keys"):
        KeyStore(file=empty)


def test_bad_spec_in_list_does_not_echo_it() -> None:
    with pytest.raises(ConfigError, match="api key #2: empty key"):
        KeyStore(["fine", "  "])
    with pytest.raises(ConfigError, match="api key #1") as info:
        KeyStore(["top secret"])
    assert "top secret" not in str(info.value)


def test_comparison_checks_every_key_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    store = KeyStore(["first", "second", "third"])
    assert store.match("first") is not None
    assert len(calls) == 3  # no early exit on the first match
    calls.clear()
    assert store.match("nope") is None
    assert len(calls) == 3
    assert all(len(a) == len(b) == 32 for a, b in calls)  # digests, never the raw key


# --- Bearer parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header(header: str | None) -> None:
    authn = Authenticator(KeyStore(["k"]))
    with pytest.raises(Unauthorized, match=r"^missing API key: send Authorization: Bearer <key>$"):
        authn.authenticate(header)


@pytest.mark.parametrize(
    "header", ["k", "Basic k", "Bearer", "Bearer  ", "Bearer k extra", "Token k"]
)
def test_garbage_header(header: str) -> None:
    authn = Authenticator(KeyStore(["k"]))
    with pytest.raises(Unauthorized, match=r"^malformed Authorization header") as info:
        authn.authenticate(header)
    assert info.value.status == 401


@pytest.mark.parametrize("header", ["Bearer k", "bearer k", "BEARER k", "  Bearer \t k  "])
def test_scheme_is_case_insensitive_and_spacing_lenient(header: str) -> None:
    assert Authenticator(KeyStore(["k"])).authenticate(header).kind == "key"


def test_disabled_auth_is_anonymous() -> None:
    for authn in (Authenticator(), Authenticator(KeyStore([]))):
        assert not authn.enabled
        assert authn.authenticate(None) is ANONYMOUS
        assert authn.authenticate("Bearer whatever") == Principal("anonymous", "anonymous")


def test_from_settings_without_anything_is_disabled() -> None:
    authn = Authenticator.from_settings([], None, None, None, ["HS256"], None, None)
    assert not authn.enabled


def test_from_settings_refuses_contradictions() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Authenticator.from_settings([], None, SECRET, "pem", ["HS256"], None, None)
    with pytest.raises(ConfigError, match="RS256 needs jwt_public_key"):
        Authenticator.from_settings([], None, SECRET, None, ["RS256"], None, None)
    with pytest.raises(ConfigError, match="HS256 needs jwt_secret"):
        Authenticator.from_settings([], None, None, "pem", ["HS256"], None, None)
    with pytest.raises(ConfigError, match="need jwt_secret or jwt_public_key"):
        Authenticator.from_settings([], None, None, None, ["HS256"], "issuer", None)


# --- JWT: HS256 -------------------------------------------------------------------------------


@pytest.fixture
def pyjwt() -> Any:
    return pytest.importorskip("jwt")


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "bob",
        "exp": int(time.time()) + 60,
        "iss": "forge",
        "aud": "api",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs_authn(**kwargs: Any) -> Authenticator:
    kwargs = {"issuer": "forge", "audience": "api", **kwargs}
    return Authenticator(jwt=JWTVerifier(SECRET, ["HS256"], **kwargs))


def test_hs256_valid(pyjwt: Any) -> None:
    token = pyjwt.encode(claims(), SECRET, algorithm="HS256")
    assert hs_authn().authenticate(bearer(token)) == Principal("jwt:bob", "jwt")


def test_from_settings_hs256(pyjwt: Any) -> None:
    authn = Authenticator.from_settings([], None, SECRET, None, ["HS256"], "forge", "api")
    token = pyjwt.encode(claims(), SECRET, algorithm="HS256")
    assert authn.authenticate(bearer(token)).id == "jwt:bob"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 60}, "token expired"),
        ({"iss": "mallory"}, "wrong issuer"),
        ({"aud": "elsewhere"}, "wrong audience"),
        ({"exp": None}, "token has no 'exp' claim"),
        ({"sub": None}, "token has no 'sub' claim"),
        ({"aud": None}, "token has no 'aud' claim"),
        ({"iss": None}, "token has no 'iss' claim"),
        ({"sub": ""}, "token has an empty 'sub' claim"),
        ({"nbf": int(time.time()) + 600}, "token not yet valid"),
    ],
)
def test_hs256_refusals(pyjwt: Any, overrides: dict[str, Any], reason: str) -> None:
    token = pyjwt.encode(claims(**overrides), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized) as info:
        hs_authn().authenticate(bearer(token))
    assert str(info.value) == reason


def test_hs256_bad_signature(pyjwt: Any) -> None:
    token = pyjwt.encode(claims(), "another-secret-that-is-32-bytes-long", algorithm="HS256")
    with pytest.raises(Unauthorized, match=r"^bad signature$"):
        hs_authn().authenticate(bearer(token))


def test_hs256_leeway(pyjwt: Any) -> None:
    token = pyjwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256")
    assert hs_authn(leeway=30).authenticate(bearer(token)).id == "jwt:bob"


def test_audience_in_token_but_not_configured(pyjwt: Any) -> None:
    token = pyjwt.encode(claims(), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="no jwt_audience is configured"):
        hs_authn(audience=None).authenticate(bearer(token))
    untargeted = pyjwt.encode(claims(aud=None, iss=None), SECRET, algorithm="HS256")
    authn = Authenticator(jwt=JWTVerifier(SECRET, ["HS256"]))
    assert authn.authenticate(bearer(untargeted)).id == "jwt:bob"


def test_algorithm_not_in_the_allowed_list(pyjwt: Any) -> None:
    token = pyjwt.encode(claims(), SECRET * 2, algorithm="HS512")
    with pytest.raises(Unauthorized, match=r"^token algorithm not allowed$"):
        hs_authn().authenticate(bearer(token))


def test_malformed_jwt(pyjwt: Any) -> None:
    with pytest.raises(Unauthorized, match=r"^malformed token$"):
        hs_authn().authenticate(bearer("not.a.jwt"))


def test_keys_are_tried_before_jwt(pyjwt: Any) -> None:
    token = pyjwt.encode(claims(), SECRET, algorithm="HS256")
    authn = Authenticator(KeyStore(["plain"]), JWTVerifier(SECRET, ["HS256"], "forge", "api"))
    assert authn.authenticate(bearer("plain")).kind == "key"
    assert authn.authenticate(bearer(token)).kind == "jwt"
    with pytest.raises(Unauthorized, match=r"^invalid API key$"):
        authn.authenticate(bearer("no-dots"))
    with pytest.raises(Unauthorized, match=r"^malformed token$"):
        authn.authenticate(bearer("x.y.z"))


def test_jwt_only_refuses_non_jwt_tokens(pyjwt: Any) -> None:
    with pytest.raises(Unauthorized, match=r"^invalid token$"):
        hs_authn().authenticate(bearer("plainkey"))


def test_hs256_refuses_weak_secrets_and_bad_algorithm_lists(pyjwt: Any) -> None:
    with pytest.raises(ConfigError, match="too weak for HS256"):
        JWTVerifier("short", ["HS256"])
    with pytest.raises(ConfigError, match="'none' would accept unsigned tokens"):
        JWTVerifier(SECRET, ["none"])
    with pytest.raises(ConfigError, match="mixes HS"):
        JWTVerifier(SECRET, ["HS256", "RS256"])
    with pytest.raises(ConfigError, match="empty"):
        JWTVerifier(SECRET, [])
    with pytest.raises(ConfigError, match="unknown jwt algorithm 'XX999'"):
        JWTVerifier(SECRET, ["XX999"])


def test_missing_pyjwt_is_a_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jwt", None)
    with pytest.raises(MissingExtra, match=r"PyJWT is not installed.*ferrousforge\[jwt\]"):
        JWTVerifier(SECRET, ["HS256"])
    # Keys alone never need PyJWT.
    assert Authenticator(KeyStore(["k"])).authenticate(bearer("k")).kind == "key"


# --- JWT: RS256 -------------------------------------------------------------------------------


def _rsa_pems(bits: int = 2048) -> tuple[str, str]:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[str, str]:
    return _rsa_pems()


def test_rs256_valid_and_from_a_file(pyjwt: Any, rsa_pair: tuple[str, str], tmp_path: Path) -> None:
    private, public = rsa_pair
    token = pyjwt.encode(claims(sub="carol"), private, algorithm="RS256")
    authn = Authenticator(jwt=JWTVerifier(public, ["RS256"], "forge", "api"))
    assert authn.authenticate(bearer(token)) == Principal("jwt:carol", "jwt")
    path = tmp_path / "jwt.pub"
    path.write_text(public, "utf-8")
    authn = Authenticator.from_settings([], None, None, str(path), ["RS256"], "forge", "api")
    assert authn.authenticate(bearer(token)).id == "jwt:carol"


def test_rs256_bad_signature(pyjwt: Any, rsa_pair: tuple[str, str]) -> None:
    other_private, _ = _rsa_pems()
    token = pyjwt.encode(claims(), other_private, algorithm="RS256")
    authn = Authenticator(jwt=JWTVerifier(rsa_pair[1], ["RS256"], "forge", "api"))
    with pytest.raises(Unauthorized, match=r"^bad signature$"):
        authn.authenticate(bearer(token))


def test_rs256_refuses_hs256_forged_with_the_public_key(
    pyjwt: Any, rsa_pair: tuple[str, str]
) -> None:
    public = rsa_pair[1]

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims()).encode())
    mac = hmac.new(public.encode(), signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + b64(mac)
    authn = Authenticator(jwt=JWTVerifier(public, ["RS256"], "forge", "api"))
    with pytest.raises(Unauthorized, match=r"^token algorithm not allowed$"):
        authn.authenticate(bearer(forged))


def test_rs256_key_problems_are_config_errors(pyjwt: Any, rsa_pair: tuple[str, str]) -> None:
    private, _ = rsa_pair
    with pytest.raises(ConfigError, match="holds a private key"):
        JWTVerifier(private, ["RS256"])
    with pytest.raises(ConfigError, match="does not suit RS256"):
        JWTVerifier("/no/such/file.pem", ["RS256"])
    with pytest.raises(ConfigError, match="does not suit HS256"):
        JWTVerifier(rsa_pair[1], ["HS256"])  # a PEM used as an HMAC secret
    _, weak = _rsa_pems(1024)
    with pytest.raises(ConfigError, match="too weak for RS256"):
        JWTVerifier(weak, ["RS256"])
