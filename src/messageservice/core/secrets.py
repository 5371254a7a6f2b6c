"""Random credentials, hashing for secrets we only compare, and encryption for secrets we send again."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


def new_hex(n_bytes: int = 16) -> str:
    return secrets.token_hex(n_bytes)


def new_alnum(length: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def hash_secret(value: str) -> str:
    """Credentials here are long random strings, so one sha256 suffices (no password stretching)."""
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def secret_matches(value: str, expected_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(value), expected_hash)


def write_private(path: Path, data: bytes) -> None:
    """Create a file only its owner can read, from the first byte on (no chmod after the fact)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class SecretBox:
    """Symmetric encryption for values that must leave the server again (application tokens)."""

    def __init__(self, key: str | bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key.encode() if isinstance(key, str) else key

    def derive(self, purpose: str) -> str:
        """A key for another use (the console's session cookie), independent of the encryption key."""
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def from_settings(cls, secret_key: str | None, data_dir: Path) -> SecretBox:
        if secret_key:
            return cls(secret_key)
        key_file = data_dir / "secret.key"
        if not key_file.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            write_private(key_file, Fernet.generate_key())
        return cls(key_file.read_bytes().strip())

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise RuntimeError("secret key does not match the database (MESSAGESERVICE_SECRET_KEY)") from exc
