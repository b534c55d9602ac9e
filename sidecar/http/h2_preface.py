"""The HTTP/2 client connection preface, apart from h2_connection.py: the front-end looks
for it on every connection's first bytes (frontend/http_conn.py), and only a connection that
sends it needs the HTTP/2 stack (h2, hpack: imported then, not at start-up)."""

__all__ = ["PREFACE", "PREFACE_HEAD"]

#: The client connection preface (RFC 9113 section 3.4): how a prior-knowledge HTTP/2
#: client announces itself on its first bytes.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: Its first 18 bytes, an HTTP/1.1-looking head ("PRI * HTTP/2.0" and an empty line): a
#: client that sent them meant HTTP/2, and a preface wrong after them is PROTOCOL_ERROR.
PREFACE_HEAD = PREFACE[:18]
