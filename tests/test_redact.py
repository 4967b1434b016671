"""scrub: our secrets out of any text a peer sent back, in any case, encoding or clipping."""

from __future__ import annotations

import base64

from scanner.probes.base import Credentials, Settings
from scanner.redact import REDACTED, scrub, secret_fragments

SETTINGS = Settings(
    proxy="http://proxyuser:Pr0xy%21Pass@proxy.lab.test:3128",
    credentials={"domain-controllers": Credentials("auditor", "Dc-Passw0rd-2026", "LAB")},
)
FRAGS = secret_fragments(SETTINGS)
TOKEN = base64.b64encode(b"proxyuser:Pr0xy!Pass").decode()


def test_every_form_of_a_secret_is_redacted() -> None:
    for text in (
        "Proxy-Authorization: Basic " + TOKEN,
        "echo: BASIC " + TOKEN.upper(),  # another case
        "password=dc-passw0rd-2026",
        "Pr0xy%21Pass and Pr0xy!Pass",
        "first bytes " + b"Dc-Passw0rd-2026".hex(),
        "utf-16 " + "Dc-Passw0rd-2026".encode("utf-16-le").hex(),
        "clipped: Basic " + TOKEN[:14] + "…",
        "tail only: " + TOKEN[-10:],
    ):
        out = scrub(text, FRAGS)
        assert REDACTED in out, text
        for secret in ("Dc-Passw0rd-2026", "Pr0xy!Pass", TOKEN, TOKEN[:9], TOKEN[-9:]):
            assert secret.lower() not in out.lower(), (text, out)


def test_text_without_secrets_is_unchanged_and_structures_are_walked() -> None:
    assert scrub("HTTP 200 from proxy.lab.test", FRAGS) == "HTTP 200 from proxy.lab.test"
    data = {"server": f"Basic {TOKEN}", "list": ["ok", "Dc-Passw0rd-2026"], "n": 5}
    out = scrub(data, FRAGS)
    assert out["n"] == 5 and out["list"][0] == "ok" and REDACTED in out["server"] and REDACTED in out["list"][1]


def test_no_secrets_no_work_and_short_passwords_do_not_blank_words() -> None:
    assert secret_fragments(Settings()) == ()
    short = secret_fragments(Settings(credentials={"r": Credentials("bob", "abc")}))
    assert scrub("a cabbage and abc", short) == "a cabbage and abc"  # 'abc' alone is too short to match
    assert REDACTED in scrub("bob:abc", short)
