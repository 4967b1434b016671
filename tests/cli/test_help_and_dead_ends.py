"""Help says what each command does and offers only what it uses; dead ends point the way."""

from __future__ import annotations

import pytest

from tests.cli._run import portready

_COMMANDS = ["profiles", "init", "plan", "scan", "listen", "send", "local", "report", "diff", "fix"]


@pytest.mark.parametrize("command", _COMMANDS)
def test_every_command_help_has_a_description(command: str) -> None:
    proc = portready(command, "--help")
    assert proc.returncode == 0
    usage, _, rest = proc.stdout.partition("\n\n")
    description = rest.split("\n\n", 1)[0]
    assert not description.startswith(("positional arguments", "options")), f"{command} has no description"
    assert len(description.split()) >= 6


def test_plan_offers_only_the_options_a_plan_uses() -> None:
    text = portready("plan", "--help").stdout
    assert "--depth" in text
    for unused in ("--timeout", "--retries", "--concurrency", "--per-host", "--ca-bundle", "--trust-private-ca", "--proxy"):
        assert unused not in text, unused
    # Options are contracts: an old command line still runs, and is told the option is ignored.
    old = portready("plan", "--timeout", "2", "--target", "domain-controllers=192.0.2.1")
    assert old.returncode == 0 and "--timeout does nothing here" in old.stderr and "ignored" in old.stderr


def test_local_offers_only_the_options_it_uses() -> None:
    text = portready("local", "--help").stdout
    assert "--timeout" in text and "--retries" in text
    for unused in ("--concurrency", "--per-host", "--depth", "--ca-bundle", "--trust-private-ca", "--proxy"):
        assert unused not in text, unused


def test_an_all_inbound_selection_points_to_listen() -> None:
    proc = portready("scan", "--profile", "qumulo")
    assert proc.returncode == 2
    assert "inbound" in proc.stderr and "portready listen --profile qumulo" in proc.stderr
    assert "give hosts for the roles \n" not in proc.stderr


def test_send_to_an_unknown_row_says_the_row_is_unknown_and_how_to_find_rows() -> None:
    proc = portready("send", "--to", "127.0.0.1", "--row", "nosuchrow")
    assert proc.returncode == 2
    assert "unknown row 'nosuchrow'" in proc.stderr and "portready profiles --json" in proc.stderr
    assert "None" not in proc.stderr
    proc = portready("send", "--to", "127.0.0.1", "--row", "qumulo/nosuchrow")
    assert proc.returncode == 2 and "its inbound rows: syslog-514" in proc.stderr


def test_send_finds_a_row_by_its_id_alone_when_one_profile_has_it() -> None:
    # The row exists in one profile only; the port is closed on loopback, so the send fails (exit 1),
    # which proves the row was found and sent to rather than rejected as unknown.
    proc = portready("send", "--to", "127.0.0.1", "--row", "events-9898", "--timeout", "1")
    assert "unknown row" not in proc.stderr
    assert proc.returncode in (0, 1) and "nutanix-files/events-9898" in proc.stdout
