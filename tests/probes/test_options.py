"""Typed probe options: parsed once when the profile loads, refused with words an author acts on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from scanner.cli import main
from scanner.probes._options import ParsedOptions, describe, option, parse_options
from scanner.probes.base import options_of, registry
from scanner.profiles import load_catalogue
from scanner.testing import make_context

PARSED: list[int] = []


@dataclass(frozen=True)
class Sample:
    name: str = option(help="required text")
    port: int = option(135, "a port")
    tls: bool | None = option(None, "on, off, or None: by port")
    extra: Any = option((), "checked by the dataclass")

    def __post_init__(self) -> None:
        PARSED.append(1)
        if not 0 < self.port < 65536:
            raise ValueError("sample: port must be a TCP port number")


def test_good_options_become_the_dataclass() -> None:
    got = parse_options("sample", Sample, {"name": "x", "port": 1135, "tls": None, "extra": [1]})
    assert got == Sample("x", 1135, None, [1])


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"name": "x", "bogus": 1}, "does not take option(s) 'bogus'; it takes: extra, name, port, tls"),
        ({"port": 1}, "needs option(s) 'name'"),
        ({"name": 5}, "option 'name' has the wrong type (int)"),
        ({"name": "x", "port": True}, "option 'port' has the wrong type (bool)"),  # YAML `yes` is not a port
        ({"name": "x", "port": "135"}, "option 'port' has the wrong type (str)"),
        ({"name": "x", "tls": 1}, "option 'tls' must be true or false"),
        ({"name": "x", "port": 70000}, "port must be a TCP port number"),
        (["name"], "options must be a mapping"),
        ({"name": "x", 7: 1}, "does not take option(s) '7'"),
    ],
)
def test_bad_options_are_refused_in_words(raw: Any, words: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_options("sample", Sample, raw)
    assert words in str(err.value)


def test_describe_lists_fields_defaults_and_help() -> None:
    assert describe(Sample) == [
        ("name", "required", "required text"), ("port", "135", "a port"),
        ("tls", "None", "on, off, or None: by port"), ("extra", "()", "checked by the dataclass"),
    ]  # fmt: skip


def test_the_loader_parses_once_and_the_probe_reads_the_typed_object() -> None:
    from scanner.probes.rpc_dynamic import RpcDynamicOptions

    catalogue = load_catalogue([])
    specs = [c for p in catalogue.profiles.values() for r in p.rows for c in r.checks if c.probe == "rpc-dynamic"]
    assert specs
    for spec in specs:
        assert isinstance(spec.options, ParsedOptions) and isinstance(spec.options.typed, RpcDynamicOptions)
        assert dict(spec.options) == {k: v for k, v in spec.options.items()}  # the raw mapping, as written
        assert [w.label for w in spec.options.typed.wanted]


async def test_a_context_built_by_hand_is_parsed_on_first_use() -> None:
    ctx = make_context("h", "127.0.0.1", 1, options={"name": "x"})
    PARSED.clear()
    assert options_of(ctx, Sample).name == "x" and PARSED == [1]
    typed = Sample("y")
    PARSED.clear()
    ctx = make_context("h", "127.0.0.1", 1, options=ParsedOptions({"name": "y"}, typed))
    assert options_of(ctx, Sample) is typed and PARSED == []


def test_every_declared_options_class_documents_each_field() -> None:
    for name, probe in registry().items():
        if probe.Options is not None:
            assert all(help_text for _, _, help_text in describe(probe.Options)), name


def test_profiles_probes_shows_options_with_defaults(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["profiles", "--probes"]) == 0
    out = capsys.readouterr().out
    assert "mapper_port (135): the endpoint mapper's port" in out
    assert "domain (None): the AD domain whose DC locator SRV record is asked" in out


async def test_a_payload_builder_seeing_another_probes_options_gets_the_defaults() -> None:
    # At port depth a UDP payload builder runs for whatever check owns the port.
    ctx = make_context("h", "127.0.0.1", 1, options={"why": "no service by design"})
    with pytest.raises(ValueError, match="does not take option"):
        options_of(ctx, Sample)
    assert options_of(ctx, Tolerant, foreign_ok=True) == Tolerant()


@dataclass(frozen=True)
class Tolerant:
    domain: str | None = option(None, "a domain")
