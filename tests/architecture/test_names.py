"""Names that lead where they say, checked on the source: a private name (``_x``) is private to its
module, and an import alias does not hide which module a name comes from."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Private names still imported from a module another change is splitting (brsm/engine/runner.py);
# each goes when its module is split and the name made public there.
PENDING_PRIVATE: set[tuple[str, str]] = set()

# The one project-wide short alias: event constants appear several to a line (``ev.STEP_STARTED``).
WELL_KNOWN_ALIASES = {("brsm.engine.events", "ev")}
# Aliases in modules another change is reorganising (the CLI's foreign errors, the runner).
PENDING_ALIASES: set[tuple[str, str, str]] = set()
ALIAS_CHECKED = ("brsm/workflows", "brsm/engine", "brsm/cli")


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    pkg = _module_of(path).split(".")
    if path.name != "__init__.py":
        pkg = pkg[:-1]
    pkg = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
    return ".".join(pkg + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(path: Path) -> set[str]:
    """``from m import _x`` and ``m._x`` where ``m`` was imported as a module: a name another module
    chose to keep to itself, reached from outside it."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    modules: dict[str, str] = {}  # local name -> module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(path, node)
            for a in node.names:
                if _private(a.name):
                    found.add(f"{base}.{a.name}")
                modules[a.asname or a.name] = f"{base}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                modules[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in modules and node.value.id not in ("self", "cls")):
            found.add(f"{modules[node.value.id]}.{node.attr}")
    return {f for f in found if f.startswith(("brsm.", "journal."))}


def hiding_aliases(path: Path) -> set[tuple[str, str]]:
    """``import a.b as c`` / ``from m import a as c`` where ``c`` does not say ``a``: a reader of ``c.x``
    has to scroll up to learn where ``x`` lives."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.asname is None:
                    continue
                full = a.name if isinstance(node, ast.Import) else f"{_absolute(path, node)}.{a.name}"
                if a.name.split(".")[-1] not in a.asname:
                    out.add((full, a.asname))
    return out


def test_no_module_imports_another_modules_private_names():
    bad = []
    for f in sorted((ROOT / "brsm").rglob("*.py")):
        rel = str(f.relative_to(ROOT))
        bad += [f"{rel} uses {name}" for name in sorted(private_imports(f)) if (rel, name) not in PENDING_PRIVATE]
    assert bad == []


def test_no_import_alias_hides_its_module():
    bad = []
    for pkg in ALIAS_CHECKED:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = str(f.relative_to(ROOT))
            bad += [f"{rel}: {full} as {alias}" for full, alias in sorted(hiding_aliases(f))
                    if (full, alias) not in WELL_KNOWN_ALIASES and (rel, full, alias) not in PENDING_ALIASES]
    assert bad == []


def test_the_pending_lists_hold_only_what_is_still_there():
    """An exception that is gone from the source goes from the list, so the lists only shrink."""
    for rel, name in PENDING_PRIVATE:
        assert name in private_imports(ROOT / rel), (rel, name)
    for rel, full, alias in PENDING_ALIASES:
        assert (full, alias) in hiding_aliases(ROOT / rel), (rel, full, alias)


def test_the_checks_catch_what_they_are_for(tmp_path):
    pkg = tmp_path / "brsm" / "x"
    pkg.mkdir(parents=True)
    f = pkg / "m.py"
    f.write_text("from brsm.workflows.backup.context import _ports\nfrom brsm.workflows import common\n"
                 "common._lease()\nfrom brsm.engine import runner as r\nfrom . import helper as helper_mod\n")
    global ROOT
    was, ROOT = ROOT, tmp_path
    try:
        assert private_imports(f) == {"brsm.workflows.backup.context._ports", "brsm.workflows.common._lease"}
        assert hiding_aliases(f) == {("brsm.engine.runner", "r")}
    finally:
        ROOT = was


def lazy_imports(path: Path) -> list[str]:
    """Imports inside a function: a dependency a reader of the module's head does not see."""
    out = []
    for fn in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += [f"{path.relative_to(ROOT)}:{n.lineno} in {fn.name}" for n in ast.walk(fn)
                    if isinstance(n, (ast.Import, ast.ImportFrom))]
    return out


def test_workflows_and_engine_import_at_the_top():
    """Start-up time is the CLI's concern (it imports the adapters and their libraries only for the
    command that needs them); below it every module is loaded by the command that runs it anyway, so
    a lazy import there only hides a dependency."""
    assert [x for pkg in ("brsm/workflows", "brsm/engine") for f in sorted((ROOT / pkg).rglob("*.py"))
            for x in lazy_imports(f)] == []
