"""Who is calling: API keys and JWTs, both sent as ``Authorization: Bearer <token>``.

Keys are held only as sha256 digests, so a config may list ``sha256:<hex>`` instead of the
secret. JWTs are checked with PyJWT, imported lazily (the ``jwt`` extra).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError, MissingExtra, Unauthorized

if TYPE_CHECKING:
    from jwt.types import Options

_HASH_PREFIX = "sha256:"
_HEX_DIGITS = frozenset("0123456789abcdef")
_HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_MISSING = "missing API key: send Authorization: Bearer <key>"
_MALFORMED = "malformed Authorization header: send Authorization: Bearer <key>"


@dataclass(frozen=True)
class Principal:
    """The caller of a request. ``id`` keys rate limits and logs, and never holds a secret."""

    id: str
    kind: Literal["anonymous", "key", "jwt", "hub"]


ANONYMOUS = Principal("anonymous", "anonymous")


class KeyStore:
    """Accepted API keys, compared in constant time.

    A spec is a plain key or ``sha256:<64 hex digits>`` (see ``KeyStore.hash``). The keys file
    holds one spec per line; blank lines and lines starting with ``#`` are ignored.
    """

    def __init__(self, specs: Iterable[str] = (), file: Path | None = None) -> None:
        digests = [_parse_spec(spec, f"api key #{n}") for n, spec in enumerate(specs, 1)]
        if file is not None:
            digests += _read_keys_file(file)
        self._digests = tuple(dict.fromkeys(digests))

    def __len__(self) -> int:
        return len(self._digests)

    @staticmethod
    def hash(key: str) -> str:
        """The spec to store in place of ``key``: ``sha256:<hex>``."""
        return _HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()

    def match(self, key: str) -> Principal | None:
        """The principal for ``key``, or None when no configured key matches."""
        digest = hashlib.sha256(key.encode()).digest()
        found = False
        for known in self._digests:
            # No early exit, so the time taken does not tell which key matched, if any.
            found |= hmac.compare_digest(digest, known)
        return Principal("key:" + digest.hex()[:12], "key") if found else None


class JWTVerifier:
    """Verifies signed JWTs: HS* with a shared secret, RS*/PS*/ES*/EdDSA with a PEM public key.

    ``exp`` and ``sub`` are required; ``iss`` and ``aud`` are required and checked when set.
    ``secret_or_public_key`` may also be the path of a PEM file for the public-key algorithms.
    """

    def __init__(
        self,
        secret_or_public_key: str,
        algorithms: Sequence[str],
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 0,
    ) -> None:
        algs = list(dict.fromkeys(algorithms))
        if not algs:
            raise ConfigError("jwt_algorithms is empty: name at least one, such as HS256")
        hmac_algs = [alg for alg in algs if alg in _HMAC_ALGORITHMS]
        if hmac_algs and len(hmac_algs) != len(algs):
            raise ConfigError("jwt_algorithms mixes HS* with public-key algorithms; pick one kind")
        key = secret_or_public_key if hmac_algs else _read_pem(secret_or_public_key)
        for alg in algs:
            _check_key(alg, key)
        self._key = key
        self._algorithms = algs
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        required = ["exp", "sub"]
        required += [claim for claim, v in (("iss", issuer), ("aud", audience)) if v is not None]
        self._options: Options = {"require": required, "enforce_minimum_key_length": True}

    def verify(self, token: str) -> str:
        """The ``sub`` claim of a valid token; raises Unauthorized naming what is wrong."""
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                options=self._options,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
            )
        except jwt.PyJWTError as e:
            raise Unauthorized(_reason(e, self._audience)) from e
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("token has an empty 'sub' claim")
        return sub


class Authenticator:
    """Turns an ``Authorization`` header into a Principal; everyone is anonymous when no
    keys and no JWT verifier are configured."""

    def __init__(self, keys: KeyStore | None = None, jwt: JWTVerifier | None = None) -> None:
        self._keys = keys if keys else None
        self._jwt = jwt

    @classmethod
    def from_settings(
        cls,
        api_keys: Sequence[str],
        api_keys_file: Path | None,
        jwt_secret: str | None,
        jwt_public_key: str | None,
        jwt_algorithms: Sequence[str],
        jwt_issuer: str | None,
        jwt_audience: str | None,
        jwt_leeway: float = 0,
    ) -> Authenticator:
        """Build from the server settings; configuration mistakes raise ConfigError."""
        keys = KeyStore(api_keys, api_keys_file) if api_keys or api_keys_file else None
        if not jwt_algorithms:  # the key says which: a secret signs HS256, a PEM key RS256
            jwt_algorithms = ["HS256"] if jwt_secret else ["RS256"]
        if jwt_secret and jwt_public_key:
            raise ConfigError("set jwt_secret or jwt_public_key, not both")
        if jwt_secret and (other := [a for a in jwt_algorithms if a not in _HMAC_ALGORITHMS]):
            raise ConfigError(f"jwt_secret is for HS* algorithms; {other[0]} needs jwt_public_key")
        if jwt_public_key and (hs := [a for a in jwt_algorithms if a in _HMAC_ALGORITHMS]):
            raise ConfigError(f"{hs[0]} needs jwt_secret; jwt_public_key is for RS*/PS*/ES*/EdDSA")
        key = jwt_secret or jwt_public_key
        if not key and (jwt_issuer or jwt_audience):
            raise ConfigError("jwt_issuer/jwt_audience need jwt_secret or jwt_public_key")
        verifier = (
            JWTVerifier(key, jwt_algorithms, jwt_issuer, jwt_audience, jwt_leeway) if key else None
        )
        return cls(keys, verifier)

    @property
    def enabled(self) -> bool:
        """True when requests must authenticate."""
        return self._keys is not None or self._jwt is not None

    def authenticate(self, authorization_header: str | None) -> Principal:
        """The caller named by ``Authorization: Bearer <key or JWT>``; raises Unauthorized."""
        if not self.enabled:
            return ANONYMOUS
        if not authorization_header or not authorization_header.strip():
            raise Unauthorized(_MISSING)
        parts = authorization_header.split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise Unauthorized(_MALFORMED)
        token = parts[1]
        if self._keys is not None and (principal := self._keys.match(token)):
            return principal
        if self._jwt is not None and token.count(".") == 2:
            return Principal("jwt:" + self._jwt.verify(token), "jwt")
        raise Unauthorized("invalid API key" if self._keys is not None else "invalid token")


def _parse_spec(spec: str, where: str) -> bytes:
    spec = spec.strip()
    if spec.lower().startswith(_HASH_PREFIX):
        hexdigest = spec[len(_HASH_PREFIX) :].lower()
        if len(hexdigest) != 64 or not _HEX_DIGITS.issuperset(hexdigest):
            raise ConfigError(f"{where}: a hashed key is 'sha256:' and 64 hex digits")
        return bytes.fromhex(hexdigest)
    if not spec:
        raise ConfigError(f"{where}: empty key")
    if any(c.isspace() for c in spec):
        raise ConfigError(f"{where}: a key cannot contain whitespace")
    return hashlib.sha256(spec.encode()).digest()


def _read_keys_file(path: Path) -> list[bytes]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read keys file {path}: {_one_line(e)}") from e
    digests = [
        _parse_spec(line, f"keys file {path} line {n}")
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not digests:
        # An empty file would otherwise leave the server open to everyone.
        raise ConfigError(f"keys file {path} holds no keys")
    return digests


def _read_pem(value: str) -> str:
    """The PEM text itself, or the contents of the file ``value`` names."""
    if value.lstrip().startswith("-----BEGIN"):
        return value
    path = Path(value).expanduser()
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL: not a path
        is_file = False
    if not is_file:
        return value
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read jwt public key {path}: {_one_line(e)}") from e


def _check_key(alg: str, key: str) -> None:
    """Fail at startup, not per request, when ``key`` cannot verify ``alg`` tokens."""
    try:
        import jwt
        from jwt.algorithms import has_crypto, requires_cryptography
    except ImportError as e:
        raise MissingExtra("PyJWT", "jwt") from e

    if alg.lower() == "none":
        raise ConfigError("jwt algorithm 'none' would accept unsigned tokens")
    if alg in requires_cryptography and not has_crypto:
        raise MissingExtra("cryptography", "jwt")
    try:
        impl = jwt.get_algorithm_by_name(alg)
    except NotImplementedError:
        raise ConfigError(f"unknown jwt algorithm {alg!r}") from None
    try:
        prepared: Any = impl.prepare_key(key)
    except (jwt.PyJWTError, ValueError, TypeError) as e:
        raise ConfigError(f"the jwt key does not suit {alg}: {_one_line(e)}") from e
    if callable(getattr(prepared, "public_key", None)):
        raise ConfigError("jwt_public_key holds a private key; configure the public key only")
    if weak := impl.check_key_length(prepared):
        raise ConfigError(f"the jwt key is too weak for {alg}: {weak}")


def _reason(err: Exception, audience: str | None) -> str:
    import jwt

    if isinstance(err, jwt.MissingRequiredClaimError):
        return f"token has no {err.claim!r} claim"
    if isinstance(err, jwt.InvalidAudienceError) and audience is None:
        return "token has an audience but no jwt_audience is configured"
    reasons: list[tuple[type[Exception], str]] = [
        (jwt.ExpiredSignatureError, "token expired"),
        (jwt.ImmatureSignatureError, "token not yet valid"),
        (jwt.InvalidIssuerError, "wrong issuer"),
        (jwt.InvalidAudienceError, "wrong audience"),
        (jwt.InvalidSignatureError, "bad signature"),
        (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
        (jwt.InvalidIssuedAtError, "bad 'iat' claim"),
        (jwt.DecodeError, "malformed token"),
    ]
    for kind, reason in reasons:
        if isinstance(err, kind):
            return reason
    return f"invalid token: {_one_line(err)}"


def _one_line(err: Exception) -> str:
    return " ".join(str(getattr(err, "strerror", None) or err).split())
