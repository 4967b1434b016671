"""Probes summarise their own evidence; the engine stores it as the check's `summary`; reports print it.

Against real peers (an openssl TLS peer on loopback, a hostile peer, a closed port, a
nftables drop in the lab) and against hostile evidence (a saved report may hold anything).
"""

from __future__ import annotations

import socket
from typing import Any, Callable, ClassVar

import pytest

from scanner.models import Reason, Status
from scanner.probes.base import _REGISTRY, Outcome, Probe, ProbeContext, Settings, passed, register, registry
from scanner.report import build_document
from scanner.reporters import render_text
from scanner.testing import make_context, run_probe
from tests.lab.tls import TLS_HOSTNAME, TlsCerts, TlsPeer

from . import samples


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_engine_stores_the_tls_summary_of_a_real_peer(
    loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    peer = loopback_tls_peer("valid", http=False)
    settings = Settings(timeout=2.0, retries=0, ca_bundle=str(loopback_tls_certs.ca_bundle))
    ctx = make_context(TLS_HOSTNAME, "127.0.0.1", peer.port, probe="tls", role="vmware-servers", settings=settings)
    result = await run_probe("tls", ctx)
    assert result.status is Status.PASS, result.detail
    assert result.summary.startswith(result.evidence["tls_version"])
    assert f"until {result.evidence['not_after'][:10]}" in result.summary
    assert result.to_dict()["summary"] == result.summary


async def test_a_closed_port_a_hostile_peer_and_an_expired_certificate_summarise_honestly(
    hostile: Callable[..., tuple[str, int]], loopback_tls_peer: Callable[..., TlsPeer],
    loopback_tls_certs: TlsCerts,
) -> None:
    settings = Settings(timeout=1.0, retries=0, ca_bundle=str(loopback_tls_certs.ca_bundle))
    refused = await run_probe("tls", make_context(TLS_HOSTNAME, "127.0.0.1", _closed_port(), probe="tls", settings=settings))
    assert refused.reason is Reason.REFUSED and refused.summary == ""
    host, port = hostile("garbage")
    garbage = await run_probe("tls", make_context(TLS_HOSTNAME, host, port, probe="tls", settings=settings))
    assert garbage.status is Status.FAIL and "certificate" not in garbage.summary
    peer = loopback_tls_peer("expired", http=False)
    expired = await run_probe("tls", make_context(TLS_HOSTNAME, "127.0.0.1", peer.port, probe="tls", settings=settings))
    assert expired.status is Status.WARN
    assert f"({expired.evidence['days_left']} days)" in expired.summary and expired.evidence["days_left"] < 0


@pytest.mark.lab
async def test_a_dropped_or_rejected_tls_port_has_no_summary(second_host: Any) -> None:
    settings = Settings(timeout=0.5, retries=0)
    second_host.firewall.drop(443)
    dropped = await run_probe("tls", make_context(TLS_HOSTNAME, second_host.ipv4, 443, probe="tls", settings=settings))
    assert dropped.reason is Reason.FILTERED and dropped.summary == ""
    second_host.firewall.clear()
    second_host.firewall.reject(443)
    rejected = await run_probe("tls", make_context(TLS_HOSTNAME, second_host.ipv4, 443, probe="tls", settings=settings))
    assert rejected.reason is Reason.REFUSED and rejected.summary == ""


class _Summarising(Probe):
    name: ClassVar[str] = "test-summarising"
    fail_summary: ClassVar[bool] = False

    async def run(self, ctx: ProbeContext) -> Outcome:
        return passed("ok", flavour="vanilla")

    def summarize(self, evidence: Any) -> str:
        if self.fail_summary:
            raise KeyError("flavour")
        return f"flavour {evidence['flavour']}"


class _Broken(_Summarising):
    name: ClassVar[str] = "test-broken-summary"
    fail_summary: ClassVar[bool] = True


@pytest.fixture
def throwaway_probes() -> Any:
    registry()
    register(_Summarising)
    register(_Broken)
    yield
    _REGISTRY.pop(_Summarising.name, None)
    _REGISTRY.pop(_Broken.name, None)


async def test_a_summarize_bug_costs_the_line_not_the_check(throwaway_probes: None) -> None:
    good = await run_probe("test-summarising", make_context("h", "127.0.0.1", 1, probe="test-summarising"))
    assert good.status is Status.PASS and good.summary == "flavour vanilla"
    bad = await run_probe("test-broken-summary", make_context("h", "127.0.0.1", 1, probe="test-broken-summary"))
    assert bad.status is Status.PASS and bad.summary == ""


def test_results_built_outside_the_engine_get_their_probes_summary() -> None:
    doc = samples.listen_doc()  # the listener builds its own results
    seen = doc["rows"][0]["checks"][0]
    assert seen["summary"].startswith("syslog: <14>link up")


EVIDENCE: dict[str, tuple[dict[str, Any], str]] = {
    "smb": ({"dialect": "3.1.1", "signing_required": True}, "SMB 3.1.1 signing required"),
    "epm": ({"endpoint_count": 42}, "42 RPC endpoints"),
    "rpc-dynamic": ({"interfaces": [{"interface": "wmi", "status": "pass", "port": 49668}]}, "wmi: pass on 49668"),
    "sql-named-instances": ({"instances": [{"name": "SQLEXPRESS", "tcp_port": 50123}]}, "instances SQLEXPRESS (TCP 50123)"),
    "listen": ({"syslog": {"message": "link up"}}, "syslog: link up"),
    "https": ({"tls_version": "TLSv1.3", "subject": "CN=x", "not_after": "2027-03-01T00:00:00+00:00", "days_left": 400},
              "TLSv1.3, certificate CN=x until 2027-03-01 (400 days), not trusted"),
    "ldaps": ({"tls_version": "TLSv1.2", "cert_subject": "CN=dc1", "cert_not_after": "2027-03-01T00:00:00Z",
               "cert_days_left": 9, "cert_trusted": True}, "TLSv1.2, certificate CN=dc1 until 2027-03-01 (9 days), trusted"),
}
HOSTILE_EVIDENCE: list[dict[str, Any]] = [
    {}, {"dialect": ["3.1.1"]}, {"endpoint_count": "many"}, {"endpoint_count": True}, {"interfaces": "wmi"},
    {"interfaces": [1, None, {"interface": {"x": 1}}]}, {"instances": {"name": "x"}}, {"instances": [None, 3]},
    {"syslog": "text"}, {"syslog": {"message": ["x"]}}, {"tls_version": 3, "not_after": 5, "days_left": "x"},
    {"cert_not_after": {"x": 1}, "cert_days_left": []}, {"dialect": "x" * 10_000},
]


@pytest.mark.parametrize("probe", sorted(EVIDENCE))
def test_each_probe_summarises_its_own_evidence(probe: str) -> None:
    evidence, words = EVIDENCE[probe]
    assert registry()[probe]().summarize(evidence) == words


@pytest.mark.parametrize("probe", sorted(registry()))
def test_no_summarize_raises_on_hostile_evidence(probe: str) -> None:
    instance = registry()[probe]()
    for evidence in HOSTILE_EVIDENCE:
        text = instance.summarize(evidence)
        assert isinstance(text, str) and len(text) <= 1000


def test_every_format_prints_the_saved_summary() -> None:
    r = samples.result(samples.SMB, "dc1", "198.18.0.10",
                       samples.check("tcp", 445, "smb", Status.PASS, Reason.OK, "negotiated", 1.0, dialect="3.1.1"))
    doc = build_document("scan", [r], started="s", finished="f", options={})
    doc["rows"][0]["checks"][0]["summary"] = "saved words"
    for fmt in ("html", "markdown", "csv", "console"):
        assert "saved words" in render_text(fmt, doc), fmt
