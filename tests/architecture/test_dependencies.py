"""The dependency direction, checked on the source: cli → workflows → ports ← adapters; journal alone."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBS = ("asyncssh", "aioboto3", "aiobotocore", "boto3", "botocore", "oss2", "nebula3", "rocksdict", "moto")


def _package_of(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved (``from .base import x`` in
    brsm/adapters/storage/s3.py is brsm.adapters.storage.base), at any depth (imports inside functions
    count: a lazy import is still a dependency)."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                pkg = _package_of(path)
                pkg = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                base = ".".join(pkg + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from brsm import cli` imports brsm.cli
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


def test_relative_imports_are_resolved():
    f = ROOT / "brsm/adapters/storage/s3.py"
    assert "brsm.adapters.storage.base" in imports_of(f)


def test_wiring_does_not_import_the_cli():
    """The composition root sits below the CLI: what it hands the workflows (progress, output) lives
    in brsm.console."""
    bad = [m for m in imports_of(ROOT / "brsm/wiring.py") if m == "brsm.cli" or m.startswith("brsm.cli.")]
    assert bad == []


def test_console_imports_nothing_above_it():
    assert offenders("brsm/console", ("brsm.cli", "brsm.wiring", "brsm.workflows", "brsm.adapters")) == []


def test_the_sandbox_imports_nothing_of_brsm_but_itself():
    """The sandbox is the oracle: it may not share a line with the tool it judges."""
    bad = [f"{f.relative_to(ROOT)} imports {m}" for f in files("brsm/sandbox") for m in imports_of(f)
           if (m == "brsm" or m.startswith("brsm.")) and not (m == "brsm.sandbox" or m.startswith("brsm.sandbox."))]
    assert bad == []


def test_fakes_do_not_share_the_adapters_error_mapping():
    """In-process fakes implement the ports on their own: from the adapters they may take only the
    wire formats they must produce (the .meta codec, the remote path guard, the temp-file suffix),
    never the error mapping or retry logic they are meant to test against."""
    allowed = {"brsm.adapters", "brsm.adapters.meta_codec", "brsm.adapters.remote_cmd", "brsm.adapters.ssh"}
    bad = []
    for f in files("brsm/fakes"):
        for m in imports_of(f):
            if m.startswith("brsm.adapters") and m not in allowed and not any(
                    m.startswith(a + ".") and a != "brsm.adapters" for a in allowed):
                bad.append(f"{f.relative_to(ROOT)} imports {m}")
    assert bad == []


def test_a_broken_sandbox_import_is_raised_not_hidden(tmp_path):
    """`brsm sandbox` is mounted unless the [sandbox] extra is missing; any other import error in the
    sandbox (a bug) reaches the user instead of a CLI that quietly lacks the command."""
    import subprocess
    import sys

    probe = (
        "import sys, importlib.abc\n"
        "class Broken(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'brsm.sandbox.errors':\n"
        "            raise ImportError('cannot import name X from brsm.sandbox.errors')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "import brsm.cli.app\n"
    )
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode != 0 and "cannot import name X" in p.stderr


SHELLS = ("sh", "bash", "/bin/sh", "/bin/bash", "-c")


def shell_talk(path: Path) -> list[str]:
    """Where a module runs a command on a host or writes shell: a call of a ``run``/``exec`` method
    (the SSH adapter's raw exec; ``asyncio.run`` and a runner's ``run`` excepted), or a string that is
    a shell or its ``-c``. A workflow asks a ``HostPort`` verb instead."""
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "run", "exec", "_exec", "create_process", "start_process"):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in ("asyncio", "runner"):
                continue
            bad.append(f"{where}:{node.lineno} calls .{node.func.attr}()")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                node.value in SHELLS or "bash -c" in node.value or '"$@"' in node.value):
            bad.append(f"{where}:{node.lineno} says {node.value[:30]!r}")
    return bad


def test_workflows_ask_hosts_for_verbs_and_never_write_shell():
    """Only the SSH adapter (brsm.adapters.remote_cmd, ssh_verbs) writes commands; the port offers no
    raw exec for a workflow to reach for."""
    from brsm.ports import HostPort

    assert not hasattr(HostPort, "run") and not hasattr(HostPort, "exec")
    bad = [b for pkg in ("brsm/workflows", "brsm/engine") for f in files(pkg) for b in shell_talk(f)]
    assert bad == []


def test_the_shell_check_catches_what_it_is_for(tmp_path):
    probe = tmp_path / "step.py"
    probe.write_text('async def f(h):\n    await h.run(["bash", "-c", "echo"])\n    await asyncio.run(g())\n')
    assert shell_talk(probe) == ["step.py:2 calls .run()", "step.py:2 says 'bash'", "step.py:2 says '-c'"]


def test_the_fakes_parse_no_command_text():
    """The fakes implement what a verb means; they never take a command line apart."""
    bad = [b for f in files("brsm/fakes") for b in shell_talk(f)]
    bad += [f"{f.relative_to(ROOT)} imports shlex" for f in files("brsm/fakes") if "shlex" in imports_of(f)]
    assert bad == []
