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
