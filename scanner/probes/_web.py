"""Web clients for probes that ask several paths (papi, vsphere, ontap, winrm), and safe XML.

`WebClient` speaks HTTP or HTTPS (one request per connection; the TLS side is the kit in
`_tls`); `safe_xml` parses a peer's XML answer without entity expansion, bounded in size
and tolerant of any declared encoding (an unknown ``encoding=`` is no answer, not a crash).
"""

from __future__ import annotations

from typing import Any

from scanner.probes._proxy import Stream, open_stream
from scanner.probes._tls import TlsSession, handshake, judge, open_tls, sni_for, unverified_context
from scanner.probes.base import Outcome, ProbeContext, ProbeError
from scanner.wire.http import HttpResponse, close_writer, host_header, http_request


class WebClient:
    """One request per connection over HTTP or HTTPS, for probes that ask several paths.

    The first HTTPS connection is judged (`open_tls`); later ones skip verification since
    the certificate has been judged already. `finish` adds the TLS evidence and turns a
    pass into warn on certificate problems::

        web = WebClient(ctx, tls=True)
        response = await web.request("GET", "/platform/latest")   # ProbeError on non-HTTP
        return web.finish(passed("PAPI answers"))
    """

    def __init__(self, ctx: ProbeContext, tls: bool = True, port: int | None = None) -> None:
        self.ctx = ctx
        self.tls = tls
        self.port = port if port is not None else (ctx.port or (443 if tls else 80))
        self.session: TlsSession | None = None
        self.via_proxy: str | None = None

    async def _stream(self) -> Stream:
        if not self.tls:
            stream = await open_stream(self.ctx, self.port)
        elif self.session is None:
            self.session = await open_tls(self.ctx, self.port)
            stream = self.session.stream
        else:
            stream = await handshake(self.ctx, self.port, unverified_context(), sni_for(self.ctx))
        self.via_proxy = stream.via_proxy
        return stream

    async def request(
        self,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        max_body: int = 256 * 1024,
    ) -> HttpResponse:
        try:
            stream = await self._stream()
        except ProbeError as exc:
            raise self._with_tls(exc) from exc
        try:
            return await http_request(
                self.ctx, stream.reader, stream.writer, method, path,
                host=host_header(self.ctx.host, self.port, 443 if self.tls else 80),
                headers=headers, body=body, max_body=max_body,
            )  # fmt: skip
        except ProbeError as exc:
            raise self._with_tls(exc) from exc
        finally:
            await close_writer(stream.writer)

    def _with_tls(self, error: ProbeError) -> ProbeError:
        """A failed request still carries the judged certificate (diff and HTML read it)."""
        if self.session is None:
            return error
        return ProbeError(judge(self.ctx, self.session, error.outcome))

    def finish(self, outcome: Outcome) -> Outcome:
        if self.session is not None:
            return judge(self.ctx, self.session, outcome)
        if self.via_proxy:
            return Outcome(
                outcome.status, outcome.reason, outcome.detail,
                {**dict(outcome.evidence), "via_proxy": self.via_proxy},
            )  # fmt: skip
        return outcome


def safe_xml(body: bytes, limit: int = 256 * 1024, allow_doctype: bool = False) -> Any:
    """Parse a peer's XML safely: no ENTITY declarations (no entity expansion), bounded size.

    A DOCTYPE is refused too, unless `allow_doctype` (ONTAPI answers carry
    ``<!DOCTYPE netapp SYSTEM '...'>``): then only one without an internal subset
    passes — expat never fetches the external DTD, and without an internal subset no
    entity can be declared. Returns the root Element, or None.
    """
    import xml.etree.ElementTree as ET

    if not body or len(body) > limit:
        return None
    upper = body.upper()
    if b"<!ENTITY" in upper:
        return None
    at = upper.find(b"<!DOCTYPE")
    if at >= 0:
        end = upper.find(b">", at)
        if not allow_doctype or end < 0 or b"[" in upper[at:end] or upper.count(b"<!DOCTYPE") > 1:
            return None
    try:
        return ET.fromstring(body)
    except Exception:  # noqa: BLE001 - ParseError, but also LookupError/UnicodeError/ValueError
        # from the peer's own ``encoding=`` (an unknown or non-text codec): no XML answer.
        return None


def local_name(tag: str) -> str:
    """'{urn:vim25}about' -> 'about'."""
    return tag.rsplit("}", 1)[-1]
