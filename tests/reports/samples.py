"""Report documents for the report tests, built the way `scan` builds them (build_document).

`scan_doc("old")` / `scan_doc("new")` are two runs of the same inventory a release apart;
`hostile_doc()` carries peer text meant to break each format; `listen_doc()` is an inbound run.
"""

from __future__ import annotations

import copy
from typing import Any

from scanner.models import CheckResult, CheckSpec, Direction, Reason, Row, RowResult, Status, Target, Transport
from scanner.report import build_document

AUDITOR = "198.18.0.5"

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)> | `rm -rf` \n# heading\n[click](javascript:alert(1)) & &lt;"


def row(profile: str, rid: str, port: str, proto: str, purpose: str, target_role: str = "domain-controllers",
        direction: Direction = Direction.OUTBOUND, doc_target: str = "Domain controllers",
        doc_source: str = "Netwrix Auditor Server") -> Row:
    return Row(
        profile=profile, id=rid, section=f"{profile} ports", doc_port=port, doc_protocol=proto,
        doc_source=doc_source, doc_target=doc_target, purpose=purpose, direction=direction,
        source="auditor-server", target=target_role,
        checks=(CheckSpec(Transport.TCP, "tcp", 1),),
    )


def check(proto: str, port: Any, probe: str, status: Status, reason: Reason, detail: str = "",
          ms: float = 12.5, **evidence: Any) -> CheckResult:
    return CheckResult(proto, port, probe, status, reason, detail or f"{status.value}: {reason.value}", evidence, ms)


def result(r: Row, host: str, address: str | None, *checks: CheckResult) -> RowResult:
    return RowResult(r, Target(r.target, host), address, tuple(checks))


def cert(subject: str, not_after: str, days_left: int, sha: str) -> dict[str, Any]:
    return {"tls_version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "trusted": True, "subject": subject,
            "issuer": "CN=LAB-CA", "san": ["dc1.lab.test"], "not_before": "2025-01-01T00:00:00+00:00",
            "not_after": not_after, "days_left": days_left, "name_matches": True, "sha256": sha}


LDAP = row("active-directory", "ldap-389", "389", "TCP\\UDP", "LDAP Common queries")
GC_SSL = row("active-directory", "gc-ssl-3269", "3269", "TCP", "Global catalog LDAP over SSL")
WMI = row("active-directory", "wmi-135-dynamic", "135 and dynamic range: 1024 -65535", "TCP",
          "Windows Management Instrumentation. `gpupdate /force `")
SMB = row("active-directory", "smb-445", "445", "TCP", "SMB 2.0/3.0 Authenticated communication")
SCM = row("windows-server", "scm-135", "135", "TCP", "Service Control Manager Remote Protocol (RPC) Core Service installation",
          target_role="windows-servers", doc_target="Monitored computer")
ONTAP = row("netapp-ontap", "https-443", "https", "HTTPS", "Configure firewall to make file shares and Clustered Data ONTAP "
            "HTTP/HTTPS ports accessible from the computer where Netwrix Auditor Server is installed.",
            target_role="netapp-clusters", doc_target="Clustered Data ONTAP")
SQL = row("sql-server", "named-dynamic", "Dynamic: 1024 -65535", "TCP", "SQL Server named instances",
          target_role="sql-servers", doc_target="SQL Server")

ENDPOINTS = [{"uuid": "e1af8308-5d1f-11c9-91a4-08002b14a0fa", "version": "3.0", "protocol": "tcp", "port": 49664, "name": "epmp"},
             {"uuid": "12345778-1234-abcd-ef00-0123456789ab", "version": "0.0", "protocol": "tcp", "port": 49667, "name": "lsarpc"}]


def _results(new: bool) -> list[RowResult]:
    dc1, dc2 = ("dc1", "198.18.0.10"), ("dc2", "198.18.0.11")
    cert_old = cert("CN=dc1.lab.test", "2027-03-01T00:00:00+00:00", 400, "aa" * 32)
    cert_new = cert("CN=dc1.lab.test", "2026-06-01T00:00:00+00:00", 120, "bb" * 32)
    out = [
        result(LDAP, *dc1, check("tcp", 389, "ldap", Status.PASS, Reason.OK, "RootDSE of LAB.TEST", 3.1, naming_context="DC=lab,DC=test"),
               check("udp", 389, "cldap", Status.PASS, Reason.OK, "CLDAP netlogon answered", 2.0)),
        result(GC_SSL, *dc1, check("tcp", 3269, "ldaps", Status.PASS, Reason.OK, "TLSv1.3", 8.0, **(cert_new if new else cert_old))),
        result(SMB, *dc1, check("tcp", 445, "smb", Status.PASS, Reason.OK, "SMB negotiated", 4.0,
                                dialect="3.0.2" if new else "3.1.1", signing_required=True)),
        result(WMI, *dc1, check("tcp", 135, "epm", Status.PASS, Reason.OK, "endpoint mapper answered", 5.0,
                                endpoint_count=2 if not new else 3,
                                endpoints=ENDPOINTS + ([{"uuid": "f6beaff7-1e19-4fbb-9f8f-b89e2018337c", "version": "1.0",
                                                          "protocol": "tcp", "port": 49670, "name": "even6"}] if new else [])),
               *([check("tcp", "1024-65535", "rpc-dynamic", Status.FAIL, Reason.FILTERED,
                        "filtered: WMI on 49668 does not answer", 3000.0,
                        interfaces=[{"interface": "wmi", "status": "filtered", "reason": "filtered", "port": 49668}])] if new else [])),
        result(SCM, "fs1", "198.18.0.20",
               check("tcp", 135, "epm", Status.FAIL, Reason.FILTERED if not new else Reason.REFUSED,
                     "filtered: no answer in 3 s — a firewall drops TCP 135 between this host and fs1" if not new
                     else "refused: fs1 reset the connection on TCP 135", 3000.0)),
        result(SQL, "sql1", "198.18.0.30",
               check("tcp", "1024-65535", "sql-named-instances", Status.PASS, Reason.OK, "instances answered", 20.0,
                     instances=[{"name": "SQLEXPRESS", "tcp_port": 50123 if not new else 50999, "status": "pass"}])),
    ]
    if not new:
        out.append(result(LDAP, *dc2, check("tcp", 389, "ldap", Status.PASS, Reason.OK, "RootDSE", 3.0)))
        out.append(result(GC_SSL, *dc2, check("tcp", 3269, "ldaps", Status.FAIL, Reason.FILTERED,
                                                "filtered: no answer in 3 s — a firewall drops TCP 3269 between this host and dc2", 3000.0)))
    else:
        out.append(result(ONTAP, "filer1", "198.18.0.40", check("tcp", 443, "ontap", Status.FAIL, Reason.FILTERED,
                                                                 "filtered: no answer in 3 s", 3000.0)))
    return out


def scan_doc(which: str = "old") -> dict[str, Any]:
    new = which == "new"
    doc = build_document(
        "scan", _results(new), started="2026-01-10T10:00:00+00:00" if not new else "2026-03-01T10:00:00+00:00",
        finished="2026-01-10T10:00:04+00:00" if not new else "2026-03-01T10:00:05+00:00",
        options={"depth": "protocol", "timeout": 3.0, "strict": False, "profiles": "auto"},
        inventory={"path": "lab-inventory.yaml", "sha256": "ab" * 32, "roles": {"domain-controllers": 2}},
        extra={"notes": ["2 inbound row(s) flow to this host"]},
    )
    doc["host"] = {"name": "auditor01", "addresses": ["127.0.0.1", "fe80::1", AUDITOR], "os": "Linux", "python": "3.11"}
    return doc


def hostile_doc() -> dict[str, Any]:
    bad = row("active-directory", "evil-" + "x", HOSTILE[:40], "TCP", "purpose " + HOSTILE)
    formula = row("active-directory", "formula", "=cmd|' /C calc'!A0", "+TCP", "@SUM(1+1)")
    doc = build_document(
        "scan",
        [
            result(bad, "dc1<b>", "198.18.0.10",
                   check("tcp", 636, "ldaps", Status.FAIL, Reason.PROTOCOL, "banner " + HOSTILE, 2.0,
                         banner=HOSTILE, subject="CN=<script>alert(2)</script>", nested={"x": [HOSTILE, {"k": HOSTILE}]})),
            result(formula, "-dc2", "198.18.0.11", check("tcp", 1, "tcp", Status.PASS, Reason.OK, "=HYPERLINK(\"http://x\")", 1.0)),
        ],
        started="2026-01-10T10:00:00+00:00", finished="2026-01-10T10:00:01+00:00", options={"note": HOSTILE},
        inventory={"path": "inv<script>.yaml", "sha256": "cd" * 32, "roles": {}},
        extra={"notes": [HOSTILE]},
    )
    doc["host"] = {"name": "auditor<script>", "addresses": [AUDITOR], "os": "Linux", "python": "3.11"}
    return doc


def listen_doc() -> dict[str, Any]:
    syslog = row("network-devices", "syslog-514", "514", "UDP", "Getting events from monitored devices",
                 target_role="network-devices", direction=Direction.INBOUND, doc_source="Monitored network devices",
                 doc_target="Netwrix Auditor Server")
    res = [
        result(syslog, "sw1", "198.18.0.50", check("udp", 514, "listen", Status.PASS, Reason.OK, "3 datagrams arrived", 0.0,
                                                   source_address="198.18.0.50", count=3,
                                                   syslog={"message": "<14>link up " + HOSTILE})),
        result(syslog, "sw2", "198.18.0.51", check("udp", 514, "listen", Status.FAIL, Reason.NOT_SEEN,
                                                   "nothing arrived from sw2 (198.18.0.51) on UDP 514 in 60 s", 0.0)),
    ]
    doc = build_document(
        "listen", res, started="2026-01-10T10:00:00+00:00", finished="2026-01-10T10:01:00+00:00",
        options={"duration": 60}, inventory={},
        extra={"unexpected": [{"protocol": "udp", "port": 514, "rows": ["network-devices/syslog-514"],
                               "source_address": "198.18.0.99", "count": 7, "syslog": {"message": HOSTILE}}],
               "listener": {"complete": True, "arrivals": 10}, "notes": []},
    )
    doc["host"] = {"name": "auditor01", "addresses": [AUDITOR], "os": "Linux", "python": "3.11"}
    return doc


def with_version(doc: dict[str, Any], version: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["schema_version"] = version
    return out
