"""TLS on the TCP listeners (uvicorn's --ssl-* flags), for a sidecar that faces clients with
no web server in front.  Behind nginx or Caddy, TLS ends there and the Unix socket stays plain;
Unix sockets are never wrapped.

The context is built once, before anything listens, so that a missing file, a key that does not
match its certificate or a wrong password is one line and exit 2 (``TLSConfigError``).
Defaults are the ssl module's for a server (``PROTOCOL_TLS_SERVER``: TLS 1.2 at least,
OpenSSL's cipher list), with ALPN offering h2 and http/1.1 (http/1.1 only with --no-http2).
"""
from __future__ import annotations

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
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
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
    return ctx


def _reason(exc: OSError) -> str:
    return getattr(exc, "reason", None) or exc.strerror or str(exc)
