"""Bounded, seeded fuzzing of the LDAP answer parsers (run in CI as ordinary tests):
whatever a peer sends, the codec raises BerError or returns data, the RootDSE record and
the diagnostic filter never raise, and nothing is super-linear on the input."""

from __future__ import annotations

import random

import pytest

from scanner.probes.ldap import _CODE_WORDS, RootDseEvidence, diagnostic_codes
from scanner.wire import ldap as wire

SEED = 11


def _valid_answers() -> list[bytes]:
    attrs = wire.sequence(
        wire.sequence(wire.octets("defaultNamingContext"), wire.sequence(wire.octets("DC=lab,DC=test"), tag=0x31)),
        wire.sequence(wire.octets("currentTime"), wire.sequence(wire.octets("20260101000000.0Z"), tag=0x31)),
    )
    entry = wire.message(7, wire.tlv(wire.SEARCH_ENTRY, wire.octets("") + attrs))
    done = wire.message(7, wire.tlv(wire.SEARCH_DONE, wire.integer(0, 0x0A) + wire.octets("") + wire.octets("")))
    bind = wire.message(
        8,
        wire.tlv(
            wire.BIND_RESPONSE,
            wire.integer(14, 0x0A) + wire.octets("") + wire.octets("x") + wire.octets(b"\x01" * 40, 0x87),
        ),
    )
    return [entry, done, bind, entry + done]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        at = rng.randrange(len(out)) if out else 0
        if choice < 0.5 and out:
            out[at] = rng.randrange(256)
        elif choice < 0.7:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif choice < 0.85 and out:
            del out[at : at + rng.randint(1, 16)]
        else:
            out[at:at] = b"\x84\xff\xff\xff\xff"  # a huge length
    return bytes(out)


def _parse_all(data: bytes) -> None:
    for msg in wire.split_messages(data):
        if msg.op == wire.SEARCH_ENTRY:
            _dn, entry = wire.parse_search_entry(msg.body)
            RootDseEvidence.of(entry).to_evidence()
        elif msg.op in (wire.SEARCH_DONE, wire.BIND_RESPONSE, wire.EXTENDED_RESPONSE):
            result = wire.parse_result(msg.body)
            diagnostic_codes(result.diagnostic)


def test_mutated_ldap_answers_only_ever_raise_ber_error() -> None:
    rng = random.Random(SEED)
    seeds = _valid_answers()
    ok = refused = 0
    for _ in range(20000):
        data = _mutate(rng, rng.choice(seeds))
        try:
            _parse_all(data)
            ok += 1
        except wire.BerError:
            refused += 1
    assert ok and refused


def test_random_bytes_only_ever_raise_ber_error() -> None:
    rng = random.Random(SEED + 1)
    for _ in range(5000):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        try:
            _parse_all(data)
        except wire.BerError:
            pass


@pytest.mark.parametrize("depth", [16, 17, 1000])
def test_deep_nesting_is_refused_or_parsed_without_recursion_errors(depth: int) -> None:
    data = b""
    for _ in range(depth):
        data = wire.sequence(data)
    try:
        _parse_all(data)
    except wire.BerError:
        pass


def test_diagnostic_filter_on_hostile_text_is_linear_and_keeps_only_known_codes() -> None:
    rng = random.Random(SEED + 2)
    alphabet = "0123456789abcdefABCDEF data:, \u00e9\u200b\x00"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        assert all(code in _CODE_WORDS for code in diagnostic_codes(text))
    # A megabyte of near-matches: the filter reads a bounded prefix, one pass.
    assert diagnostic_codes("data 5" * 200_000) == []
