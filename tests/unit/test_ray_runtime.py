"""The local Ray's cluster token is made private (Ray writes it readable by everyone)."""

from __future__ import annotations

from pathlib import Path

from actors.backends.ray.runtime import _private_token


def test_the_ray_token_is_made_private(tmp_path: Path) -> None:
    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    _private_token(token)
    assert token.stat().st_mode & 0o777 == 0o600
    _private_token(tmp_path / "missing")  # nothing to do, no error
