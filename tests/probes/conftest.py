"""Probe tests: libkrb5 (pyspnego[kerberos] in the test extra) resolves names and finds KDCs
on its own, below the resolver guard of tests/conftest.py. Every probe test therefore starts
with a krb5.conf that knows no realm and may not look anything up in DNS; tests that talk
Kerberos to the lab DC point KRB5_CONFIG at their own file naming the KDC by address.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NO_NETWORK_KRB5_CONF = """\
[libdefaults]
  dns_lookup_realm = false
  dns_lookup_kdc = false
  dns_canonicalize_hostname = false
  rdns = false
"""


@pytest.fixture(autouse=True)
def _krb5_without_dns(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path_factory.getbasetemp() / "krb5-no-dns.conf"
    if not conf.exists():
        conf.write_text(NO_NETWORK_KRB5_CONF)
    monkeypatch.setenv("KRB5_CONFIG", str(conf))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{Path(conf).with_suffix('.ccache')}")
