"""Former home of the TLS kit, split into `_tls` (contexts, handshake, certificate,
judgement) and `_web` (WebClient, safe_xml, local_name). Kept only so branches written
against the old name still import; new code imports `_tls` / `_web`."""

from __future__ import annotations

from scanner.probes._tls import (  # noqa: F401
    Certificate,
    TlsEvidence,
    TlsSession,
    certificate_problems,
    judge,
    name_matches,
    open_tls,
    parse_certificate,
    tls_evidence,
    tls_summary,
    unverified_context,
    verifying_context,
)
from scanner.probes._web import WebClient, local_name, safe_xml  # noqa: F401
