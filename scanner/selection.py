"""Which rows a run covers: the profiles asked for, or every profile that has targets."""

from __future__ import annotations

from scanner.errors import UsageError
from scanner.inventory import Inventory
from scanner.models import Direction, Row
from scanner.profiles import Catalogue


def select_rows(catalogue: Catalogue, profiles: list[str], inventory: Inventory, *, direction: Direction | None = None) -> list[Row]:
    """Rows of the chosen profiles; with none chosen, of profiles with a targeted row."""
    if profiles:
        chosen = profiles
    else:
        have = {role for role, hosts in inventory.targets.items() if hosts}
        chosen = [
            pid for pid, profile in catalogue.profiles.items()
            if any(row.direction is Direction.OUTBOUND and row.target in have for row in profile.rows)
        ]
    rows = [row for pid in chosen for row in catalogue.profiles[pid].rows]
    if direction is not None:
        rows = [r for r in rows if r.direction is direction]
    return rows


def require_targets(inventory: Inventory, profiles: list[str]) -> None:
    if not profiles and not any(inventory.targets.values()):
        raise UsageError(
            "nothing to check: give targets with --target ROLE=HOST (e.g. --target domain-controllers=dc1) "
            "or --inventory FILE (`portready init` writes an example), or choose --profile ID"
        )


# Each pair becomes a planned row and a result held until the reports are written: a bound
# keeps a typo (a /8 for a /24) from exhausting memory. One /16 of computers fits.
MAX_PAIRS = 2_000_000


def check_plan_size(rows: list[Row], inventory: Inventory) -> None:
    """Refuse rows x targets beyond MAX_PAIRS before the plan is built (exit 2)."""
    pairs = sum(len(inventory.targets.get(r.target, ())) for r in rows if r.direction is Direction.OUTBOUND)
    if pairs > MAX_PAIRS:
        raise UsageError(
            f"{pairs} row x target pairs; the limit is {MAX_PAIRS}: choose fewer profiles (--profile) "
            "or split the targets over several runs"
        )


def inbound_only_hint(rows: list[Row]) -> str | None:
    """When every selected row flows to the Auditor host, the words that point to `listen`."""
    if rows and all(r.direction is Direction.INBOUND for r in rows):
        profiles = sorted({r.profile for r in rows})
        return (
            f"every selected row of {', '.join(profiles)} is inbound (traffic flows to this host): nothing to "
            f"scan; prove them with `portready listen --profile {profiles[0]}` here and "
            f"`portready send --to THIS_HOST --profile {profiles[0]}` on a source host"
        )
    return None
