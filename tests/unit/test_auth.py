"""auth.py without sockets: token loading and checking, TLS settings."""
from __future__ import annotations

import pytest

from superserve.scheduler.sidecar.auth import Auth, AuthConfig, AuthError, TlsConfig, load_token

TOKEN = "unit-token-" + "ab" * 8


def test_token_from_file_or_environment_never_both(tmp_path):
    f = tmp_path / "t"
    f.write_text(f"  {TOKEN}\n")
    assert load_token(str(f), None) == TOKEN
    assert load_token(None, TOKEN) == TOKEN
    assert load_token(None, "") is None and load_token(None, None) is None
    with pytest.raises(AuthError, match="twice"):
        load_token(str(f), TOKEN)
    f.write_text("\n")
    with pytest.raises(AuthError, match="empty"):
        load_token(str(f), None)


@pytest.mark.parametrize("bad", ["short", "has a space in it, long enough", "é" * 20])
def test_weak_or_unsendable_tokens_are_refused_without_quoting_them(bad):
    with pytest.raises(AuthError) as e:
        AuthConfig(token=bad)
    assert bad not in str(e.value)


def test_reason_and_repr():
    auth = Auth(AuthConfig(token=TOKEN))
    assert auth.reason(f"Bearer {TOKEN}") is None and auth.reason(f"bearer  {TOKEN} ") is None
    assert auth.reason(None) == auth.reason("") == "missing"
    for bad in (TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer", "Bearer é"):
        assert auth.reason(bad) == "invalid", bad
    assert TOKEN not in repr(AuthConfig(token=TOKEN))
    assert not Auth(AuthConfig()).enabled


def test_tls_settings_need_cert_and_key_together():
    with pytest.raises(AuthError, match="both"):
        TlsConfig(cert="c.pem")
    with pytest.raises(AuthError, match="needs"):
        TlsConfig(client_ca="ca.pem")
    assert not TlsConfig().enabled and TlsConfig().http_context() is None and TlsConfig().grpc_credentials() is None
