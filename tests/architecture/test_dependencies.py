"""The dependency direction, checked on the source: cli → workflows → ports ← adapters; journal alone."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBS = ("asyncssh", "aioboto3", "aiobotocore", "boto3", "botocore", "oss2", "nebula3", "rocksdict", "moto")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def files(pkg: str):
    return sorted((ROOT / pkg).rglob("*.py"))


def offenders(pkg: str, forbidden) -> list[str]:
    bad = []
    for f in files(pkg):
        for mod in imports_of(f):
            if any(mod == p or mod.startswith(p + ".") for p in forbidden):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    return bad


def test_journal_imports_nothing_of_brsm():
    assert files("journal"), "journal package missing"
    assert offenders("journal", ("brsm",)) == []


def test_workflows_and_engine_see_ports_not_libraries():
    forbidden = LIBS + ("brsm.adapters", "brsm.sandbox", "brsm.cli", "brsm.wiring", "brsm.fakes")
    assert offenders("brsm/workflows", forbidden) == []
    assert offenders("brsm/engine", forbidden + ("brsm.workflows",)) == []


def test_nothing_below_the_cli_imports_it():
    for pkg in ("brsm/workflows", "brsm/engine", "brsm/adapters", "journal"):
        assert offenders(pkg, ("brsm.cli",)) == [], pkg


def test_adapters_do_not_import_workflows_or_sandbox():
    assert offenders("brsm/adapters", ("brsm.workflows", "brsm.sandbox", "brsm.engine")) == []
