"""What is shown or stored of a source URL: its credentials masked.

A base URL from the environment (`TAXI_SOURCE_URL`, `TAXI_TLC_URL`) may carry a token, as userinfo
(`http://user:TOKEN@host`) or as a query value (`?sig=TOKEN`, a signed URL). Only the request
itself uses the real URL; every message, log line, record and piece of metadata gets
`redact_url`'s (or, for text that may quote it, `redact_text`'s).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def _masked_query(query: str) -> str:
    # Every value, whatever its name: which parameters are secret is the server's business.
    parts = (p.partition("=") for p in query.split("&"))
    return "&".join(f"{name}={MASK}" if sep else (MASK if name else "") for name, sep, _ in parts)


def redact_url(url: str) -> str:
    """`url` with a userinfo password masked (`user:***@`), a lone userinfo masked whole (`***@`:
    it may be the token), and every query value masked (`?sig=***&x=***`). Idempotent."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # not even a URL: show nothing of it
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:{MASK}" if colon else MASK
    netloc = f"{userinfo}{at}{hostport}"
    query = _masked_query(parts.query) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _secrets(url: str) -> dict[str, str]:
    """The pieces of `url` that may be quoted on their own (`user:TOKEN@`, `?sig=TOKEN…`), each
    with its masked form: whole pieces only, so a short value never masks text around it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return {}
    userinfo, at, _ = parts.netloc.rpartition("@")
    found = {f"{userinfo}@": redact_url(f"//{userinfo}@")[2:]} if at else {}
    if parts.query:
        found[f"?{parts.query}"] = f"?{_masked_query(parts.query)}"
    return found


def redact_text(text: str, url: str) -> str:
    """`text` (an exception's message, say) with `url` masked, and any piece of it quoted alone,
    such as the query urllib3 quotes in "Max retries exceeded with url: /file?sig=…"."""
    text = text.replace(url, redact_url(url))
    for piece, masked in _secrets(url).items():
        text = text.replace(piece, masked)
    return text
