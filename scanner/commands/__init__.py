"""Subcommands of `portready`, one module each (discovered by scanner.cli)."""
