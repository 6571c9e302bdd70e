"""Credentials and TLS settings, and keeping them out of everything splade-es prints.

A module of its own so that the engines and :mod:`connect` both depend on it and not on
each other.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from urllib.parse import unquote


@dataclass(frozen=True)
class Credentials:
    """How to authenticate and verify TLS. Secrets never appear in ``repr`` or messages."""

    api_key: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True

    @classmethod
    def from_env(cls, **given) -> Credentials:
        """Explicit values win; otherwise SPLADE_ES_API_KEY / _USERNAME / _PASSWORD / _CA_CERTS."""
        def pick(name: str) -> str | None:
            value = given.get(name)
            return value if value else (os.environ.get(f"SPLADE_ES_{name.upper()}") or None)

        verify = given.get("verify_certs")
        return cls(pick("api_key"), pick("username"), pick("password"), pick("ca_certs"),
                   True if verify is None else bool(verify))

    def tls_options(self, url: str) -> dict[str, object]:
        """Client keyword arguments for certificate checks (both official clients take the same)."""
        if not url.startswith("https"):
            return {}
        return {"verify_certs": self.verify_certs, "ca_certs": self.ca_certs, "ssl_show_warn": self.verify_certs}

    def headers(self) -> dict[str, str]:
        if self.api_key:
            return {"authorization": f"ApiKey {self.api_key}"}
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            return {"authorization": f"Basic {token}"}
        return {}

    def secrets(self) -> list[str]:
        """Every string that must never be printed: the key, the password, and the encoded header."""
        values = [self.api_key, self.password, *self.headers().values()]
        return [value for value in values if value]


def _userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, userinfo, rest)`` split on the raw text, or None without userinfo.

    Parsed by hand, not by ``urlsplit``, so a password holding an unencoded ``/``, ``#`` or
    ``?`` (which would end the authority there) still counts as userinfo: everything up to
    the last ``@`` is. A URL path never needs an ``@``.
    """
    scheme, sep, after = url.partition("://")
    if not sep:
        scheme, after = "", url
    else:
        scheme += sep
    if "@" not in after:
        return None
    userinfo, _, rest = after.rpartition("@")
    return scheme, userinfo, rest


def redact(url: str) -> str:
    """The URL without ``user:password@``, for messages and logs (IPv6 hosts keep their brackets)."""
    parts = _userinfo(url)
    return url if parts is None else parts[0] + parts[2]


_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@]+@")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret and any URL's ``user:password@`` masked: for a message that
    leaves the process (a service's error reply) and may quote what a library said."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _URL_USERINFO.sub(r"\1", text)


def split_credentials(url: str, credentials: Credentials) -> tuple[str, Credentials]:
    """Move ``user:password@`` out of the URL into the credentials; percent-encoded
    characters in them (``%40`` for ``@``) are decoded, as browsers and curl do."""
    parts = _userinfo(url)
    if parts is None:
        return url, credentials
    username, colon, password = parts[1].partition(":")
    return redact(url), replace(credentials, username=unquote(username) or credentials.username,
                                password=unquote(password) if colon else credentials.password)
