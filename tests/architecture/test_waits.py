"""Every bounded wait in brsm goes through ``brsm.concurrency.bounded``, never ``asyncio.wait_for``:
on Python 3.11 wait_for loses a cancellation that lands as the awaited thing ends, and a run a
signal told to stop went on (CI, stop 31). The sandbox stands for the cluster and is not brsm."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait_for_calls(path: Path) -> list[int]:
    """Lines calling ``asyncio.wait_for`` (a Condition's ``wait_for(predicate)`` is another thing)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Attribute) and node.attr == "wait_for" and isinstance(node.value, ast.Name)
                and node.value.id == "asyncio"):
            lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "asyncio" and any(a.name == "wait_for" for a in node.names):
            lines.append(node.lineno)
    return lines


def test_no_asyncio_wait_for_in_brsm():
    found = {str(p.relative_to(ROOT)): ls for p in sorted((ROOT / "brsm").rglob("*.py"))
             if "sandbox" not in p.relative_to(ROOT).parts and (ls := wait_for_calls(p))}
    assert found == {}, "use brsm.concurrency.bounded (keeps the cancellation) instead of asyncio.wait_for"


def test_the_check_finds_one(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import asyncio\nasync def f(x):\n    return await asyncio.wait_for(x, 1)\n")
    assert wait_for_calls(f) == [3]
