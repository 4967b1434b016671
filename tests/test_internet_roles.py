"""`internet: true` on a role (profiles/roles.yaml) makes its rows internet-bound: proxied by default."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.probes._proxy import internet_bound
from scanner.profiles import load_catalogue
from scanner.testing import make_context

_ROLES = """\
roles:
  - id: saas-endpoints
    title: A SaaS service
    internet: true
  - id: branch-servers
    title: Branch servers
"""
_PROFILE = """\
id: saas
title: SaaS
section: SaaS
rows:
  - id: api-443
    doc: {port: "443", protocol: TCP, source: Netwrix Auditor Server, target: SaaS, purpose: the API}
    direction: outbound
    source: auditor-server
    target: saas-endpoints
    checks:
      - {protocol: tcp, port: 443, probe: https}
  - id: branch-443
    doc: {port: "443", protocol: TCP, source: Netwrix Auditor Server, target: Branch, purpose: on the intranet}
    direction: outbound
    source: auditor-server
    target: branch-servers
    checks:
      - {protocol: tcp, port: 443, probe: https}
"""


def test_builtin_internet_roles_are_the_microsoft_365_partner_and_meraki_ones() -> None:
    cat = load_catalogue()
    internet = {rid for rid, role in cat.roles.items() if role.internet}
    assert internet == {"exchange-online-endpoints", "entra-id-endpoints", "sharepoint-online-endpoints",
                        "teams-endpoints", "partner-portal", "meraki-dashboard"}  # fmt: skip
    for row in cat.rows():
        assert row.internet == (row.target in internet), row.key
    assert {r.profile for r in cat.rows() if r.internet} >= {"exchange-online", "entra-id", "sharepoint-online", "teams"}


def _ctx_for(row_key: str, extra: Path):  # type: ignore[no-untyped-def]
    row = next(r for r in load_catalogue([extra]).rows() if r.key == row_key)

    async def make():  # type: ignore[no-untyped-def]
        ctx = make_context("h.example", "192.0.2.1", 443, probe="https", role=row.target)
        return dataclasses.replace(ctx, row=row)

    return asyncio.run(make())


def test_a_role_of_ones_own_profiles_marked_internet_is_proxied_by_default(tmp_path: Path) -> None:
    (tmp_path / "roles.yaml").write_text(_ROLES)
    (tmp_path / "saas.yaml").write_text(_PROFILE)
    assert internet_bound(_ctx_for("saas/api-443", tmp_path))
    assert not internet_bound(_ctx_for("saas/branch-443", tmp_path))


@pytest.mark.parametrize("value", ['"yes"', "1", "[true]"])
def test_a_non_boolean_internet_flag_is_refused_with_its_line(tmp_path: Path, value: str) -> None:
    (tmp_path / "roles.yaml").write_text(_ROLES.replace("internet: true", f"internet: {value}"))
    with pytest.raises(ConfigError) as err:
        load_catalogue([tmp_path])
    assert err.value.line == 4 and "roles.0.internet: expected bool" in str(err.value)
