"""Structure guards: probe knowledge lives in scanner/probes/, and scanner's modules import without cycles.

Both read the source with `ast` (nothing is imported but the probe registry), so they also see
imports inside functions, which hide a cycle from Python but not from a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from scanner.models import Reason, Transport
from scanner.probes.base import registry

ROOT = Path(__file__).resolve().parents[1]
SCANNER = ROOT / "scanner"

# Words that are a registered probe's name and also a word of another vocabulary: a transport
# ("tcp", "udp") or a reason ("tls"). A literal of these says nothing about a probe.
AMBIGUOUS = {t.value for t in Transport} | {r.value for r in Reason}
# A probe's name used as something else in one file, and why that is not probe knowledge.
OTHER_MEANING = {
    ("scanner/cli.py", "listen"): "the `portready listen` command, in the help order",
    ("scanner/commands/listen.py", "listen"): "the command's own name and its report kind",
    ("scanner/remediation.py", "ontap"): "the `portready fix --format ontap` dialect, a CLI contract",
    ("scanner/wire/rpc.py", "http"): "an RPC tower floor's protocol (ncacn_http), the wire's word",
}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(SCANNER.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _probe_literals() -> dict[str, list[tuple[int, str]]]:
    """Every string literal equal to a registered probe name, by file, outside scanner/probes/."""
    names = set(registry()) - AMBIGUOUS
    found: dict[str, list[tuple[int, str]]] = {}
    for path in sorted(SCANNER.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("scanner/probes/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names \
                    and (rel, node.value) not in OTHER_MEANING:  # fmt: skip
                found.setdefault(rel, []).append((node.lineno, node.value))
    return found


def test_no_probe_is_known_by_name_outside_the_probes() -> None:
    leaks = _probe_literals()
    assert leaks == {}, "declare it on the probe class (scanner/probes/base.py) instead of naming the probe"


def test_the_guard_sees_a_probe_name_where_one_is() -> None:
    tree = ast.parse('if check["probe"] == "rpc-dynamic": pass')
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert "rpc-dynamic" in literals and "rpc-dynamic" in set(registry()) - AMBIGUOUS


def _typing_only(tree: ast.AST) -> set[int]:
    """Nodes under `if TYPE_CHECKING:`: never run, so no cycle at import time or after."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def _imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _typing_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := owner(alias.name)) is not None:
                    yield target
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in modules else owner(base)
                if target is not None:
                    yield target


@lru_cache(maxsize=1)
def _cycles() -> tuple[frozenset[str], ...]:
    """Strongly connected sets of scanner modules (Tarjan), counting imports inside functions."""
    modules = _modules()
    graph = {m: {t for t in _imports(m, p, modules) if t != m} for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return tuple(out)


def test_no_import_cycle_at_all() -> None:
    assert [sorted(c) for c in _cycles()] == [], "an import cycle among scanner's modules (a function-level import counts too)"


def test_remediation_and_the_reporters_import_no_cycle() -> None:
    assert not any({"scanner.remediation", "scanner.reporters.markdown"} & c for c in _cycles())
    modules = _modules()
    imported = set(_imports("scanner.remediation", modules["scanner.remediation"], modules))
    assert not {m for m in imported if m.startswith("scanner.reporters")}


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pkg import b\n")
    modules = {"pkg.a": a, "pkg.b": tmp_path / "b.py"}
    (tmp_path / "b.py").write_text("import pkg.a\n")
    assert list(_imports("pkg.a", a, modules)) == ["pkg.b"]
    assert list(_imports("pkg.b", tmp_path / "b.py", modules)) == ["pkg.a"]
