"""TLS on the TCP listeners (uvicorn's --ssl-* flags), for a sidecar that faces clients with
no web server in front.  Behind nginx or Caddy, TLS ends there and the Unix socket stays plain;
Unix sockets are never wrapped.

The context is built once, before anything listens, so that a missing file, a key that does not
match its certificate or a wrong password is one line and exit 2 (``TLSConfigError``).
Defaults are the ssl module's for a server (``PROTOCOL_TLS_SERVER``: TLS 1.2 at least,
OpenSSL's cipher list), with ALPN offering h2 and http/1.1 (http/1.1 only with --no-http2).

Each TLS connection's part of the ASGI ``tls`` extension (``connection_info``) is computed
once, at the handshake, and goes with every request of the connection (docs/protocol.md,
"The tls field"); a plain connection carries nothing.
"""
from __future__ import annotations

import re
import ssl

from sidecar.config import Config

CERT_REQS = {0: ssl.CERT_NONE, 1: ssl.CERT_OPTIONAL, 2: ssl.CERT_REQUIRED}


class TLSConfigError(ValueError):
    """The --ssl-* settings cannot make a TLS context: the message says why, in one line."""


def server_context(config: Config) -> ssl.SSLContext | None:
    """The listeners' SSLContext, or None when no certificate is configured."""
    if not config.ssl_certfile:
        others = [name for name in ("ssl_keyfile", "ssl_keyfile_password", "ssl_ca_certs",
                                    "ssl_ciphers") if getattr(config, name)]
        if others or config.ssl_cert_reqs:
            flag = "--" + (others[0] if others else "ssl_cert_reqs").replace("_", "-")
            raise TLSConfigError(f"{flag} needs --ssl-certfile")
        return None
    if config.ssl_cert_reqs not in CERT_REQS:
        raise TLSConfigError("--ssl-cert-reqs must be 0 (none), 1 (optional) or 2 (required)")
    if config.ssl_cert_reqs and not config.ssl_ca_certs:
        raise TLSConfigError("--ssl-cert-reqs asks for client certificates: give --ssl-ca-certs")
    ctx = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(config.ssl_certfile, config.ssl_keyfile,
                            password=config.ssl_keyfile_password)
    except FileNotFoundError as exc:
        raise TLSConfigError(f"TLS certificate or key: no such file {exc.filename!r}") from None
    except OSError as exc:   # ssl.SSLError is an OSError: bad PEM, key mismatch, password
        raise TLSConfigError(f"cannot load the TLS certificate {config.ssl_certfile!r}: "
                             f"{_reason(exc)}") from None
    if config.ssl_ca_certs:
        try:
            ctx.load_verify_locations(config.ssl_ca_certs)
        except OSError as exc:
            raise TLSConfigError(f"cannot load --ssl-ca-certs {config.ssl_ca_certs!r}: "
                                 f"{_reason(exc)}") from None
    ctx.verify_mode = CERT_REQS[config.ssl_cert_reqs]
    if config.ssl_ciphers:
        try:
            ctx.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise TLSConfigError(f"--ssl-ciphers: no cipher matches {config.ssl_ciphers!r}") \
                from None
    # h2 first (RFC 7301: the server picks in its own order) unless --no-http2
    ctx.set_alpn_protocols(["h2", "http/1.1"] if config.http2 else ["http/1.1"])
    ctx.server_cert = _first_pem(config.ssl_certfile)
    ctx.cipher_ids = {c["name"]: c["id"] & 0xFFFF for c in ctx.get_ciphers()}
    return ctx


class ServerContext(ssl.SSLContext):
    """The listeners' context, with what the ``tls`` extension says of the server's side:
    ``server_cert`` (PEM, the certificate presented) and ``cipher_ids`` (OpenSSL's cipher
    names to their IANA numbers)."""
    server_cert: str | None = None
    cipher_ids: dict = {}


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.S)
_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def _first_pem(path: str) -> str | None:
    try:
        with open(path) as fh:
            found = _PEM.search(fh.read())
    except (OSError, UnicodeDecodeError):
        return None
    return found.group(0).strip() + "\n" if found else None


def connection_info(ssl_object, ctx) -> list:
    """The ASGI ``tls`` extension of one connection, as the list its records carry
    (``events.TLS_FIELDS``' order): server_cert, client_cert_chain, client_cert_name,
    client_cert_error, tls_version, cipher_suite.  A client certificate that fails
    verification fails the handshake (--ssl-cert-reqs 1 or 2), so client_cert_error is
    always None here."""
    try:
        chain = _client_chain(ssl_object)
    except Exception:   # (a private API before Python 3.13): the leaf at least
        der = ssl_object.getpeercert(binary_form=True)
        chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    name = rfc4514(ssl_object.getpeercert() or {}) if chain else None
    cipher = ssl_object.cipher()
    return [getattr(ctx, "server_cert", None), chain, name, None,
            _VERSIONS.get(ssl_object.version(), 0),
            getattr(ctx, "cipher_ids", {}).get(cipher[0], 0) if cipher else 0]


def _client_chain(ssl_object) -> list[str]:
    """The certificates the client sent, PEM, its own first (ASGI: client_cert_chain)."""
    if ssl_object.getpeercert(binary_form=True) is None:
        return []
    get = getattr(ssl_object, "get_unverified_chain", None)   # Python 3.13
    if get is None:
        get = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if get is not None:
        certs = get() or []
        return [ssl.DER_cert_to_PEM_cert(c) if isinstance(c, bytes)
                else c.public_bytes(ssl._ssl.ENCODING_PEM) for c in certs if c is not None]
    der = ssl_object.getpeercert(binary_form=True)
    return [ssl.DER_cert_to_PEM_cert(der)] if der else []


# RFC 4514 section 3's short names; others by their OID, as RFC 4514 wants for the rest
_SHORT = {"commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST",
          "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID",
          "emailAddress": "1.2.840.113549.1.9.1", "serialNumber": "2.5.4.5",
          "title": "2.5.4.12", "givenName": "2.5.4.42", "surname": "2.5.4.4"}


def rfc4514(cert: dict) -> str | None:
    """The subject of ``ssl.getpeercert()`` as an RFC 4514 distinguished name (most specific
    RDN first, the reverse of the certificate's order)."""
    subject = cert.get("subject")
    if not subject:
        return None
    return ",".join("+".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in rdn)
                    for rdn in reversed(subject))


def _escape(value: str) -> str:
    out = re.sub(r'([,+"\\<>;])', r"\\\1", value)
    if out[:1] in ("#", " "):
        out = "\\" + out
    if out.endswith(" "):
        out = out[:-1] + "\\ "
    return out


def _reason(exc: OSError) -> str:
    return getattr(exc, "reason", None) or exc.strerror or str(exc)
