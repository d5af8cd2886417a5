"""Bad and hostile input, run as a user runs it: the `brsm` CLI in a subprocess, against the sandbox
cluster where one is involved (issue 7, "Bad input and hostile input").

Every case asserts the exit code docs/exit-codes.md gives it, exactly one `brsm: error: ...` line that
names what is wrong (and its `hint:` line), that `--json` prints one JSON error object instead, and
that nothing was lost: no snapshot, lease or checkpoint dir left on the cluster, its data unchanged,
backups in storage untouched. docs/reliability.md ("Bad input and hostile input") maps every input
of the issue to the tests that prove it, here and elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import manifest_files
from tests.e2e.conftest import BRSM, tmpfs
from tests.e2e.test_backup_restore import aside_dirs, checkpoint_dirs, leases, snapshots

pytestmark = pytest.mark.sandbox


# -- running brsm and reading what it says ------------------------------------------------------------
def run(env, *args: str, home: Path | None = None, extra: dict[str, str] | None = None,
        unset: tuple[str, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    e = dict(env.env)
    if home is not None:
        e["BRSM_HOME"] = str(home)
    for k in unset:
        e.pop(k, None)
    e.update(extra or {})
    return subprocess.run([*BRSM, *args], env=e, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def the_error(p: subprocess.CompletedProcess) -> tuple[str, str | None]:
    """The one `brsm: error:` line and its `hint:` (text mode); never a traceback."""
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("brsm: error: ")]
    assert len(errors) == 1, f"want one error line, got:\n{p.stderr[-3000:]}"
    i = errors[0]
    rest = lines[i + 1:]
    assert len(rest) <= 1 and all(ln.startswith("hint: ") for ln in rest), \
        f"the error must be one line, then at most a hint:\n{p.stderr[-3000:]}"
    return lines[i][len("brsm: error: "):], rest[0][len("hint: "):] if rest else None


def the_json_error(p: subprocess.CompletedProcess) -> dict:
    """With --json: exactly one JSON document on stdout, carrying error, hint and exit_code."""
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    docs = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(docs) == 1, f"want one JSON document, got:\n{p.stdout[-3000:]}"
    doc = json.loads(docs[0])
    assert isinstance(doc, dict) and doc["exit_code"] == p.returncode and doc["error"], doc
    assert "hint" in doc
    return doc


TEXT, JSON, BOTH = ("text",), ("json",), ("text", "json")


def fails(env, *args: str, code: int, says: tuple[str, ...] = (), hint: str | None = "",
          never: tuple[str, ...] = ("Incorrect frame size",), modes: tuple[str, ...] = BOTH, **kw) -> str:
    """Run ``brsm ARGS`` as text and/or with ``--json``: exit ``code``; one error line (or the JSON
    document's ``error``) containing each of ``says``; a hint containing ``hint`` ("" = any hint,
    None = none required); none of ``never`` anywhere in the output. Returns the message.

    A brsm process costs ~0.4 s to start, so cases that repeat a command shape check one mode each
    and every input gets both modes somewhere."""
    msg = ""
    for mode in modes:
        p = run(env, *args, *(["--json"] if mode == "json" else []), **kw)
        where = f"brsm {' '.join(args)}{' --json' if mode == 'json' else ''}"
        assert p.returncode == code, f"{where} -> {p.returncode}, want {code}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        if mode == "json":
            doc = the_json_error(p)
            msg, h = doc["error"], doc["hint"]
        else:
            msg, h = the_error(p)
        for s in says:
            assert s in msg, f"{where}: {s!r} not in the error {msg!r}"
        for s in never:
            assert s not in p.stderr + p.stdout, f"{where}: {s!r} must never be shown: {msg!r}"
        if hint is not None:
            assert h and hint in h, f"{where}: hint {h!r} lacks {hint!r} (error: {msg!r})"
    return msg


# -- what must be left as it was -----------------------------------------------------------------------
def cluster_clean(env) -> None:
    assert snapshots(env) == [], "no snapshot may be left"
    assert leases(env) == [], "no lease may be left"
    assert checkpoint_dirs(env) == [], "no checkpoint dir may be left"
    assert aside_dirs(env) == [], "no set-aside dir may be left"


def tree(root: Path) -> dict[str, object]:
    """Every entry under root: a symlink's target, a file's inode, size and mtime (a write changes
    them), a directory as such. Equal trees = the storage was not touched."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        st = p.lstat()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)
        else:
            out[rel] = "dir"
    return out


def events_of(home: Path, op_id: int) -> list[tuple]:
    con = sqlite3.connect(home / "journal.db")
    try:
        return con.execute("SELECT seq, type, data FROM events WHERE op_id = ? ORDER BY seq", (op_id,)).fetchall()
    finally:
        con.close()


def last_op(env, home: Path | None = None) -> dict:
    p = run(env, "ops", "--json", "--limit", "1", home=home)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)[0]


# -- the journal: corrupted, edited, locked ------------------------------------------------------------
@pytest.fixture(scope="module")
def journal_with_failed_op(sandbox, tmp_path_factory):
    """A journal of its own holding one real operation that failed its preflight (unknown space).
    Resuming it as journaled would fail again; edited to name a real space, it would back that space
    up into ``<dir>/b``."""
    env = sandbox
    d = tmp_path_factory.mktemp("failed-op")
    p = run(env, "start", "backup", "--config", env.config, "--storage", f"local://{d / 'b'}",
            "--spaces", "nope", home=d / "home")
    assert p.returncode == 4, p.stderr[-2000:]
    op = last_op(env, d / "home")
    assert op["state"] == "REFUSED"  # refused by its preflight: finished, nothing to resume
    con = sqlite3.connect(d / "home" / "journal.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the whole journal in one file, to copy
    con.close()
    return d, op["id"]


@pytest.fixture
def failed_op(journal_with_failed_op, tmp_path):
    """A fresh copy of that journal: (home, op id)."""
    d, op = journal_with_failed_op
    home = tmp_path / "home"
    home.mkdir()
    (home / "journal.db").write_bytes((d / "home" / "journal.db").read_bytes())
    return home, op


def test_edited_journal_row_is_named_and_refused(sandbox, journal_with_failed_op, failed_op):
    env = sandbox
    journal_dir = journal_with_failed_op[0]
    home, op = failed_op
    con = sqlite3.connect(home / "journal.db")
    con.execute("UPDATE events SET data = replace(data, '\"nope\"', '\"space1\"') WHERE op_id = ? AND seq = 1", (op,))
    con.commit()
    con.close()
    before = events_of(home, op)
    where = f"operation {op} was tampered with at event 1"
    # every reader names the first edited event and exits 6; `ops` still lists, then fails
    fails(env, "journal", "verify", code=6, says=(f"operation {op} event 1", "edited"), home=home, modes=TEXT)
    fails(env, "audit", str(op), code=6, says=(where,), hint="keep a copy", home=home, modes=TEXT)
    p = run(env, "ops", home=home)
    assert p.returncode == 6 and "backup" in p.stdout and where in the_error(p)[0]
    p = run(env, "ops", "--json", home=home)
    assert p.returncode == 6 and the_json_error(p)["operations"][0]["id"] == op
    # resume and rollback refuse to act on edited facts: nothing runs, nothing is appended
    fails(env, "resume", str(op), code=6, says=(f"refusing to resume operation {op}", where), hint="brsm audit",
          home=home, modes=JSON)
    fails(env, "rollback", str(op), code=6, says=(f"refusing to rollback operation {op}", where), home=home,
          modes=TEXT)
    assert events_of(home, op) == before
    assert not (journal_dir / "b").exists(), "the edited resume must not have backed anything up"
    cluster_clean(env)


def test_undecodable_journal_row_is_a_damaged_journal(sandbox, failed_op):
    env = sandbox
    home, op = failed_op
    con = sqlite3.connect(home / "journal.db")
    con.execute("UPDATE events SET data = '{not json' WHERE op_id = ? AND seq = 2", (op,))
    con.commit()
    con.close()
    for args, modes in ((["ops"], TEXT), (["audit", str(op)], JSON)):
        fails(env, *args, code=6, says=("journal is damaged", f"operation {op} event 2", "not JSON"),
              hint="keep a copy", home=home, modes=modes)
    fails(env, "journal", "verify", code=6, says=(f"operation {op} event 2",), home=home, modes=TEXT)
    fails(env, "resume", str(op), code=6, says=("refusing to resume",), home=home, modes=JSON)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_journal_file_gives_one_clear_error(sandbox, failed_op, damage):
    env = sandbox
    home, op = failed_op
    db = home / "journal.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    if damage == "truncated":
        os.truncate(db, db.stat().st_size // 2)
        says = "database disk image is malformed"
    else:
        db.write_bytes(os.urandom(64 << 10))
        says = "file is not a database"
    damaged = db.read_bytes()
    commands = [["ops"], ["resume", str(op)]]
    if damage == "truncated":  # the other commands open the journal the same way: once is enough
        commands += [["audit", str(op)], ["rollback", str(op)], ["journal", "verify"],
                     ["start", "backup", "--config", env.config, "--storage", f"local://{home / 'b'}"]]
    for i, args in enumerate(commands):
        fails(env, *args, code=6, says=("the journal is damaged", str(db), says), hint="move", home=home,
              modes=(TEXT, JSON)[i % 2])
    assert not (home / "b").exists()
    assert db.read_bytes() == damaged, "a damaged journal is evidence: brsm must not rewrite it"
    cluster_clean(env)


HOLD = """
import sys, time
from journal import Journal
j = Journal.open(sys.argv[1])
with j.driver(int(sys.argv[2])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_journal_locked_by_another_process_names_it(sandbox, tmp_path):
    """A resumable operation (kept FAILED after LOCKED) whose journal another process drives: resume and
    rollback name that process. (A refused operation has nothing to resume: it never asks for the lock.)"""
    env = sandbox
    home = tmp_path / "home"
    p = run(env, "start", "backup", "--config", env.config, "--storage", f"local://{tmp_path / 'b'}",
            "--keep-on-failure", home=home, extra={"BRSM_FAILPOINTS": "after:LOCKED=raise"})
    assert p.returncode != 0, p.stderr[-2000:]
    op = last_op(env, home)["id"]
    assert last_op(env, home)["state"] == "FAILED"
    before = events_of(home, op)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(home / "journal.db"), str(op)],
                              stdout=subprocess.PIPE, text=True, env=env.env)
    try:
        assert holder.stdout.readline().strip() == "held"
        import socket

        for mode, modes in (("resume", BOTH), ("rollback", TEXT)):
            fails(env, mode, str(op), code=3, says=(f"operation {op}", f"pid {holder.pid}",
                                                     f"host {socket.gethostname()}"), hint="wait", home=home,
                  modes=modes)
    finally:
        holder.kill()
        holder.wait()
    assert events_of(home, op) == before
    assert run(env, "rollback", str(op), home=home).returncode == 0  # frees the lease it kept
    cluster_clean(env)


# -- a damaged or hostile backup: .meta and manifest truncated, tampered, pointing outside, absurd ---------
def rewrite(p: Path, data: bytes) -> None:
    """Replace a file (the variants share the good backup's files as hard links: never write in place)."""
    p.unlink()
    p.write_bytes(data)


def copy_backup(src: Path, name: str, dst: Path, new: str) -> None:
    """The backup ``src/name`` as ``dst/new``: files hard-linked, then named ``new`` in its manifest and
    `.meta` (a valid backup of its own, as `brsm show` confirms for the untouched control)."""
    import shutil

    from brsm.adapters.meta_codec import decode_backup_meta, encode_backup_meta

    shutil.copytree(src / name, dst / new, copy_function=os.link)
    d = dst / new
    (d / f"{name}.meta").rename(d / f"{new}.meta")
    bm = decode_backup_meta((d / f"{new}.meta").read_bytes())
    bm.backup_name = new.encode()
    raw = encode_backup_meta(bm)
    rewrite(d / f"{new}.meta", raw)
    m = manifest_files.load(d)
    m["backup_name"] = new
    for f in m["files"]:
        f["key"] = new + f["key"][len(name):]
    m["meta_sha256"] = hashlib.sha256(raw).hexdigest()
    manifest_files.save(d, m)


def _manifest(d: Path) -> dict:
    return manifest_files.load(d)


def _edit_manifest(fn):
    def damage(d: Path, name: str) -> None:
        m = _manifest(d)
        fn(m, name)
        manifest_files.save(d, m)
    return damage


def _truncate(file: str):
    def damage(d: Path, name: str) -> None:
        p = d / file.format(name=name)
        rewrite(p, p.read_bytes()[: p.stat().st_size // 2])
    return damage


def _sparse(file: str, size: int):
    def damage(d: Path, name: str) -> None:  # a huge file that costs no disk
        p = d / file.format(name=name)
        p.unlink()
        with open(p, "wb") as f:
            f.truncate(size)
    return damage


def _meta_tampered(d: Path, name: str) -> None:
    """One byte changed inside a checkpoint path: the .meta still decodes and names this backup."""
    p = d / f"{name}.meta"
    raw = bytearray(p.read_bytes())
    i = raw.index(b"/checkpoints/") + 1
    raw[i] ^= 0x20  # 'c' -> 'C'
    rewrite(p, bytes(raw))


def _meta_absurd_frame(d: Path, name: str) -> None:
    p = d / f"{name}.meta"
    raw = p.read_bytes()
    rewrite(p, (0xFFFFFFF0).to_bytes(4, "big") + raw[4:])


def _biggest(d: Path, name: str) -> Path:
    f = max(_manifest(d)["files"], key=lambda f: f["size"])
    return d.parent / f["key"]


def _symlink_file(d: Path, name: str) -> None:
    """A data file replaced by a link to a file outside the backup with the very same size."""
    victim = _biggest(d, name)
    outside = d.parent.parent / f"outside-{name}"
    outside.write_bytes(b"\0" * victim.stat().st_size)
    victim.unlink()
    victim.symlink_to(outside)


def _symlink_dir(d: Path, name: str) -> None:
    """A storage host's whole data dir moved out and linked back in."""
    import shutil

    host = next((d / "data").iterdir())
    outside = d.parent.parent / f"outside-{name}-dir"
    shutil.move(str(host), str(outside))
    host.symlink_to(outside, target_is_directory=True)


def _symlink_meta(d: Path, name: str) -> None:
    p = d / f"{name}.meta"
    outside = d.parent.parent / f"outside-{name}.meta"
    outside.write_bytes(p.read_bytes())
    p.unlink()
    p.symlink_to(outside)


def _dotdot(m: dict, name: str) -> None:
    m["files"][0]["key"] = f"{name}/data/../../../../tmp/brsm-pwned"


def _absolute(m: dict, name: str) -> None:
    m["files"][0]["key"] = "/etc/passwd"


def _absurd_size(m: dict, name: str) -> None:
    m["files"][0]["size"] = 10 ** 18


def _no_topology(m: dict, name: str) -> None:
    del m["topology"]


# tag: (damage, what `show` says, what `verify` says (all of these in one problem) or None = not run
# (`show` reads it the same way), what `start restore` says or None = not run: restore reads the
# manifest with the parser verify uses, so one row per check)
DAMAGES = {
    "manifest_truncated": (_truncate("brsm-manifest.json"), "not JSON", ("unreadable", "not JSON"), "not JSON"),
    "manifest_no_topology": (_edit_manifest(_no_topology), "no topology", ("no topology",), "no topology"),
    "manifest_dotdot": (_edit_manifest(_dotdot), "outside the backup", ("outside the backup",), None),
    "manifest_absolute": (_edit_manifest(_absolute), "outside the backup", None, None),
    "manifest_absurd_size": (_edit_manifest(_absurd_size), "impossible size", ("impossible size",),
                             "impossible size"),
    "manifest_huge": (_sparse("brsm-manifest.json", 2 << 30), "implausibly large", ("implausibly large",),
                      "implausibly large"),
    "file_list_truncated": (_truncate("brsm-manifest-files.jsonl"), "truncated", ("unreadable", "truncated"),
                            "truncated"),
    "file_list_line_huge": (_sparse("brsm-manifest-files.jsonl", 1 << 20), "over 65536 bytes",
                            ("unreadable", "over 65536 bytes"), None),
    "meta_truncated": (_truncate("{name}.meta"), "unreadable", ("unreadable", "frame length"), None),
    "meta_tampered": (_meta_tampered, "does not match the SHA-256", ("changed", "does not match the SHA-256"),
                      "does not match the SHA-256"),
    "meta_absurd_frame": (_meta_absurd_frame, "frame length 4294967280", ("frame length 4294967280",), None),
    "meta_huge": (_sparse("{name}.meta", 300 << 20), "implausibly large", None, None),
    "meta_symlink": (_symlink_meta, ".meta is missing", ("missing", ".meta"), ".meta is missing"),
    "file_symlink": (_symlink_file, "missing", ("missing", "/data/"), "missing"),
    "dir_symlink": (_symlink_dir, "missing", ("missing", "/data/"), None),
}


@pytest.fixture(scope="module")
def damaged(sandbox, tmp_path_factory):
    """One real backup, and next to it in one storage a copy per damage plus an untouched control:
    (storage dir, {tag: backup name}, control name, tree of the storage)."""
    env = sandbox
    good = tmp_path_factory.mktemp("good")
    name = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{good}",
                  "--spaces", "space1")["facts"]["backup_name"]  # one space: fewer files to copy and link
    root = tmp_path_factory.mktemp("damaged")
    store = root / "store"
    store.mkdir()
    names = {}
    for tag, (damage, *_) in DAMAGES.items():
        new = f"{name}_{tag}"
        copy_backup(good, name, store, new)
        damage(store / new, new)
        names[tag] = new
    control = f"{name}_control"
    copy_backup(good, name, store, control)
    return store, names, control, tree(store)


def test_show_lists_every_damaged_backup_as_broken_and_why(sandbox, damaged):
    env = sandbox
    store, names, control, before = damaged
    p = run(env, "show", "--storage", f"local://{store}", "--json")
    assert p.returncode == 0, p.stderr[-2000:]  # a listing: broken backups are rows, not an error
    shown = {b["name"]: b for b in json.loads(p.stdout)["backups"]}
    assert shown[control]["state"] == "complete" and not shown[control]["problems"]
    for tag, (_, says, *_) in DAMAGES.items():
        b = shown[names[tag]]
        assert b["state"] == "broken" and any(says in pr for pr in b["problems"]), (tag, b)
    p = run(env, "show", "--storage", f"local://{store}")
    assert p.returncode == 0 and "Traceback" not in p.stderr
    assert f"{len(DAMAGES)} broken" in p.stdout and "1 complete" in p.stdout
    assert tree(store) == before, "show changed the storage"


VERIFIED = [t for t, (_, _, says, _) in DAMAGES.items() if says]


@pytest.mark.parametrize("tag", VERIFIED)
def test_verify_fails_a_damaged_backup_naming_the_problem(sandbox, damaged, tag):
    env = sandbox
    store, names, _, before = damaged
    name = names[tag]
    # one brsm process per damage, text or --json in turn: the problem is named either way
    as_json = VERIFIED.index(tag) % 2 == 1
    p = run(env, "verify", name, "--storage", f"local://{store}", *(["--json"] if as_json else []))
    assert p.returncode == 6, p.stdout[-2000:] + p.stderr[-2000:]
    if as_json:
        doc = the_json_error(p)
        msg, hint = doc["error"], doc["hint"]
        lines = [f"{pr['problem']} {pr['key']}: {pr.get('detail') or ''}" for pr in doc["problems"]]
    else:
        msg, hint = the_error(p)
        lines = p.stdout.splitlines()
    assert msg.startswith(f"backup {name} failed verification") and "restore another backup" in hint
    words = DAMAGES[tag][2]
    assert any(all(w in ln for w in words) for ln in lines), (words, lines)
    assert tree(store) == before
    assert not Path("/tmp/brsm-pwned").exists()


RESTORED = [t for t, (*_, says) in DAMAGES.items() if says]


@pytest.mark.parametrize("tag", RESTORED)
def test_restore_refuses_a_damaged_backup_before_touching_the_cluster(sandbox, damaged, tag):
    env = sandbox
    store, names, _, before = damaged
    name = names[tag]
    data = env.checksum()
    modes = JSON if RESTORED.index(tag) % 2 else TEXT
    fails(env, "start", "restore", "--yes", "--config", env.config, "--storage", f"local://{store}", "--name", name,
          code=6, says=(f"backup {name}", DAMAGES[tag][3]), hint="restore another backup", modes=modes)
    assert env.checksum() == data, "the cluster's data changed"
    cluster_clean(env)
    assert tree(store) == before
    assert last_op(env)["state"] == "REFUSED"  # refused before it touched anything: needs no action


# -- a meta address that is not metad ----------------------------------------------------------------
def config_with(env, tmp_path: Path, tag: str, old: str, new: str) -> str:
    """A copy of the sandbox's cluster.toml with one line changed."""
    text = Path(env.config).read_text()
    assert old in text, old
    p = tmp_path / f"{tag}.toml"
    p.write_text(text.replace(old, new, 1))
    return str(p)


def _free_port(ip: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _not_metad(env) -> dict:
    meta_host, meta_port = env.meta.rsplit(":", 1)
    storage = next(h for h in env.info["hosts"] if "storage" in h["roles"])
    ssh_port = next(h for h in env.info["hosts"] if h["address"] == meta_host)["ssh_port"]
    return {  # tag: (address, what the error says, what the hint says)
        "http": (f"{meta_host}:{int(meta_port) + 10000}",
                 "does not speak the Nebula meta protocol (is it an HTTP port?)", "9559"),
        "closed": (f"{meta_host}:{_free_port(meta_host)}", "cannot reach any metad", "is metad running"),
        "ssh": (f"{meta_host}:{ssh_port}", "an SSH server", "9559"),
        "storaged": (f"{storage['address']}:9779", "closed the connection on verifyClientVersion", "9559"),
    }


@pytest.mark.parametrize("tag", ["http", "closed", "ssh", "storaged"])
def test_meta_address_that_is_not_metad(sandbox, tmp_path, tag):
    env = sandbox
    addr, says, hint = _not_metad(env)[tag]
    cfg = config_with(env, tmp_path, tag, f'meta = ["{env.meta}"]', f'meta = ["{addr}"]')
    modes = {"http": JSON, "closed": TEXT, "ssh": BOTH, "storaged": TEXT}[tag]  # an HTTP port costs 3 s a run
    fails(env, "start", "backup", "--config", cfg, "--storage", f"local://{tmp_path / 'b'}", code=4,
          says=(addr, says), hint=hint, modes=modes)
    assert not (tmp_path / "b").exists()
    cluster_clean(env)


# -- host keys: changed (refused, always), unknown (refused; accepted only when asked), unreachable ------
def _known_hosts_variant(env, tmp_path: Path, tag: str, edit) -> tuple[str, Path]:
    """A config whose [ssh] known_hosts is a copy of the sandbox's, edited line by line."""
    kh_src = Path(env.info["ssh"]["known_hosts"])
    kh = tmp_path / f"{tag}_known_hosts"
    kh.write_text("".join(edit(ln) for ln in kh_src.read_text().splitlines(keepends=True)))
    os.chmod(kh, 0o644)
    cfg = config_with(env, tmp_path, tag, f'known_hosts = "{kh_src}"', f'known_hosts = "{kh}"')
    return cfg, kh


def _storage_host(env, i: int = 0) -> str:
    return [h["address"] for h in env.info["hosts"] if "storage" in h["roles"]][i]


def test_changed_host_key_is_refused_even_with_accept_new(sandbox, tmp_path):
    env = sandbox
    victim = _storage_host(env)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    algo, blob = (tmp_path / "impostor.pub").read_text().split()[:2]
    cfg, kh = _known_hosts_variant(
        env, tmp_path, "changed",
        lambda ln: f"{ln.split()[0]} {algo} {blob}\n" if ln.split(",")[0] == victim else ln)
    before = kh.read_bytes()
    data = env.checksum()
    for extra, modes in (([], JSON), (["--accept-new-host-keys"], TEXT)):
        fails(env, "start", "backup", "--config", cfg, "--storage", f"local://{tmp_path / 'b'}", *extra, code=4,
              says=(f"host key of {victim}:22 has CHANGED", "refused"), hint="ssh-keygen -R", modes=modes)
    assert kh.read_bytes() == before, "a changed key must never be written"
    assert not (tmp_path / "b").exists() and env.checksum() == data
    cluster_clean(env)


def test_unknown_host_is_refused_then_accepted_only_when_asked(sandbox, tmp_path):
    env = sandbox
    newcomer = _storage_host(env, 1)
    cfg, kh = _known_hosts_variant(env, tmp_path, "unknown", lambda ln: "" if ln.split(",")[0] == newcomer else ln)
    before = kh.read_text()
    home = tmp_path / "home"
    fails(env, "start", "backup", "--config", cfg, "--storage", f"local://{tmp_path / 'b'}", code=4,
          says=(f"host key of {newcomer}:22 is unknown",), hint="--accept-new-host-keys", home=home)
    assert kh.read_text() == before and not (tmp_path / "b").exists()
    cluster_clean(env)
    # first contact, asked for: one loud line with the fingerprint, the key appended, the fact journaled
    p = run(env, "start", "backup", "--config", cfg, "--storage", f"local://{tmp_path / 'b'}", "--spaces", "space1",
            "--accept-new-host-keys", "--json", home=home)
    assert p.returncode == 0, p.stderr[-3000:]
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("brsm: WARNING:")]
    assert len(warnings) == 1 and f"{newcomer}:22" in warnings[0] and "SHA256:" in warnings[0], p.stderr[-2000:]
    fp = next(w for w in warnings[0].split() if w.startswith("SHA256:"))
    added = kh.read_text()[len(before):]
    assert kh.read_text().startswith(before) and added.startswith(f"{newcomer} ssh-ed25519 ")
    op = json.loads(p.stdout)["op_id"]
    accepted = [json.loads(d) for _, t, d in events_of(home, op) if t == "HostKeyAccepted"]
    assert accepted == [{"host": newcomer, "port": 22, "key_type": "ssh-ed25519", "fingerprint": fp,
                         "known_hosts": str(kh)}]
    # from now on it is known: no flag needed, nothing accepted again (gc visits every host over SSH)
    p = run(env, "gc", "--config", cfg, "--json", home=home)
    assert p.returncode == 0 and "WARNING" not in p.stderr and kh.read_text() == before + added, p.stderr[-2000:]
    cluster_clean(env)


def test_unreachable_host_is_a_preflight_failure(sandbox, tmp_path):
    """A host whose SSH port answers nothing (tests/e2e/test_faults.py covers a host that is down)."""
    env = sandbox
    victim = _storage_host(env, 2)
    port = _free_port(victim)
    text = Path(env.config).read_text()
    block = f'address = "{victim}"\nssh_host = "{victim}"\nssh_port = 22\n'
    assert block in text
    cfg = config_with(env, tmp_path, "unreachable", block, block.replace("ssh_port = 22", f"ssh_port = {port}"))
    data = env.checksum()
    fails(env, "start", "backup", "--config", cfg, "--storage", f"local://{tmp_path / 'b'}", code=4,
          says=(f"{victim}: connect: connection to {victim}:{port} refused",), hint="sshd running")
    assert not (tmp_path / "b").exists() and env.checksum() == data
    cluster_clean(env)


# -- a full local disk during a backup to local ---------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (the backup needs several times that): ENOSPC strikes mid-copy."""
    with tmpfs(tmp_path / "small-disk", 2) as d:
        yield d


def test_full_local_disk_fails_cleanly_rolls_back_and_resumes_after_space_is_freed(sandbox, small_disk):
    env = sandbox
    target = f"local://{small_disk / 'b'}"
    data = env.checksum()
    # 1. by default: one clear error naming the full target, and everything rolled back at once
    msg = fails(env, "start", "backup", "--config", env.config, "--storage", target, code=5,
                says=(f"{target}: writing ", "No space left on device"), hint="file system is full", modes=TEXT)
    op = last_op(env)
    assert op["state"] == "ROLLED_BACK", (op, msg)
    cluster_clean(env)
    left = [str(p.relative_to(small_disk)) for p in small_disk.rglob("*")]
    assert left in ([], ["b"]), f"a rolled-back backup left {left}"
    # 2. --keep-on-failure: the operation stays FAILED (snapshot and lease kept for the resume)...
    p = run(env, "start", "backup", "--config", env.config, "--storage", target, "--keep-on-failure", "--json")
    assert p.returncode == 5, p.stderr[-2000:]
    doc = the_json_error(p)
    op = last_op(env)
    assert "No space left on device" in doc["error"] and f"brsm resume {op['id']}" in doc["hint"]
    assert op["state"] == "FAILED" and leases(env)
    # ... and once there is room, resume finishes it: a complete backup that verifies
    subprocess.run(["mount", "-o", "remount,size=64M", str(small_disk)], check=True)
    res = env.ok("resume", str(op["id"]))
    assert res["state"] == "CLEANED"
    assert env.ok("verify", res["facts"]["backup_name"], "--storage", target, "--full")["ok"]
    assert env.checksum() == data
    cluster_clean(env)


# -- storage: malformed URIs, missing or wrong credentials ---------------------------------------------
URIS = {  # uri: (exit code, what the error says)
    "ftp://x/y": (2, "unknown storage scheme 'ftp'"),
    "local://relative/path": (2, "three slashes"),
    "s3://": (2, "no bucket"),
    "oss://bucket/../x": (2, "'.' and '..' are not allowed"),
    "s3://bucket/p?versionId=1": (2, "no '?' or '#'"),
    "s3://no-such-bucket/x": (4, "does not exist"),
}


@pytest.mark.parametrize("uri", list(URIS))
def test_malformed_or_wrong_storage_uri(sandbox, uri):
    env = sandbox
    code, says = URIS[uri]
    modes = JSON if list(URIS).index(uri) % 2 else TEXT
    checked = uri in ("ftp://x/y", "s3://bucket/p?versionId=1")  # (twice: a brsm process costs ~0.4 s)
    before = _newest_op(env) if checked else None
    fails(env, "start", "backup", "--config", env.config, "--storage", uri, code=code, says=(says,),
          hint="s3://bucket/prefix" if code == 2 else "check the URI", modes=modes)
    if checked:
        # refused before the operation exists: a bad URI is never journaled as an operation's target
        assert _newest_op(env) == before
    cluster_clean(env)


def _newest_op(env) -> int | None:
    p = run(env, "ops", "--json", "--limit", "1")
    assert p.returncode == 0, p.stderr[-2000:]
    return (json.loads(p.stdout) or [{"id": None}])[0]["id"]


def _objects(env, store: str) -> list[str]:
    """Every key in the sandbox bucket of ``store`` (with the right credentials)."""
    if store == "s3":
        import boto3

        s3 = boto3.client("s3", endpoint_url=env.info["s3"]["endpoint"], region_name="us-east-1",
                          aws_access_key_id=env.info["s3"]["access_key_id"],
                          aws_secret_access_key=env.info["s3"]["secret_access_key"])
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=env.info["s3"]["bucket"])
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
    import oss2

    o = env.info["oss"]
    bucket = oss2.Bucket(oss2.Auth(o["access_key_id"], o["access_key_secret"]), o["endpoint"], o["bucket"])
    return sorted(obj.key for obj in oss2.ObjectIterator(bucket))


CANARY = "canary-Secret-" + "9f3c1e"
NO_AWS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent/brsm-test/config",
          "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/brsm-test/credentials"}
CREDENTIALS = {  # tag: (store, environment changes, variables removed, exit code, error says, hint says)
    "s3_wrong_secret": ("s3", {"AWS_SECRET_ACCESS_KEY": CANARY}, (), 4, "SignatureDoesNotMatch", "credentials"),
    "s3_unknown_key_id": ("s3", {"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY"}, (), 4, "InvalidAccessKeyId", "credentials"),
    "s3_missing": ("s3", NO_AWS, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"), 4,
                   "no AWS credentials found", "AWS_ACCESS_KEY_ID"),
    "oss_wrong_secret": ("oss", {"OSS_ACCESS_KEY_SECRET": CANARY}, (), 4, "SignatureDoesNotMatch",
                         "OSS_ACCESS_KEY_SECRET"),
    "oss_unknown_key_id": ("oss", {"OSS_ACCESS_KEY_ID": "LTAINOSUCHKEY"}, (), 4, "InvalidAccessKeyId",
                           "OSS_ACCESS_KEY_ID"),
    "oss_missing": ("oss", {}, ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"), 2, "needs credentials",
                    "OSS_ACCESS_KEY_ID"),
}


@pytest.mark.parametrize("tag", list(CREDENTIALS))
def test_missing_or_wrong_credentials(sandbox, tmp_path, tag):
    env = sandbox
    store, extra, unset, code, says, hint = CREDENTIALS[tag]
    loc = env.s3(f"creds-{tag}") if store == "s3" else env.oss(f"creds-{tag}")
    before = _objects(env, store)
    modes = JSON if list(CREDENTIALS).index(tag) % 2 else TEXT
    kw = dict(extra={**extra, "HOME": str(tmp_path)}, unset=unset)
    fails(env, "start", "backup", "--config", env.config, *loc, code=code, says=(says,), hint=hint,
          never=("Incorrect frame size", CANARY), modes=modes, **kw)
    if CANARY in json.dumps(extra):  # reading fails the same way, and as clearly (once per store)
        p = run(env, "show", "--config", env.config, *loc, **kw)
        assert p.returncode == 5 and says in the_error(p)[0] and CANARY not in p.stdout + p.stderr
    assert _objects(env, store) == before, "nothing may be written (not even the probe object)"
    cluster_clean(env)


# -- the cluster: unknown spaces, a stale lease -----------------------------------------------------
def test_unknown_space_is_a_preflight_failure(sandbox, tmp_path):
    env = sandbox
    fails(env, "start", "backup", "--config", env.config, "--storage", f"local://{tmp_path / 'b'}",
          "--spaces", "space1,nope", code=4, says=("space(s) not found: nope", "the cluster has: space1, space2"),
          hint="--spaces")
    assert not (tmp_path / "b").exists()
    cluster_clean(env)


def _plant_lease(env, **holder) -> Path:
    import socket
    import time

    meta_host = env.meta.rsplit(":", 1)[0]
    root = next(Path(h["install_dir"]) for h in env.info["hosts"] if h["address"] == meta_host)
    lease = root / "brsm.lease"
    lease.mkdir()
    info = {"op_id": 999, "kind": "backup", "who": "someone@elsewhere", "machine": socket.gethostname(),
            "pid": 0, "expires": time.time() - 3600}
    info.update(holder)
    (lease / "holder.json").write_text(json.dumps(info))
    return lease


def test_stale_lease_is_taken_over_and_journaled(sandbox, tmp_path):
    """Expired, and its process (on this machine) is gone: the next run breaks it, says so in the journal."""
    env = sandbox
    dead = subprocess.Popen(["true"])
    dead.wait()
    lease = _plant_lease(env, pid=dead.pid)
    try:
        res = env.ok("start", "backup", "--config", env.config, "--storage", f"local://{tmp_path / 'b'}",
                     "--spaces", "space1")
    finally:
        if lease.exists():
            import shutil

            shutil.rmtree(lease)
    assert res["state"] == "CLEANED"
    broken = [json.loads(d) for _, t, d in events_of(Path(env.env["BRSM_HOME"]), res["op_id"]) if t == "LeaseBroken"]
    assert len(broken) == 1 and broken[0]["holder_op"] == 999 and f"pid {dead.pid}" in broken[0]["holder"]
    cluster_clean(env)


def test_expired_lease_of_a_live_process_is_still_refused(sandbox, tmp_path):
    """Past its expiry but its holder still runs on this machine (a run that could not refresh): refused."""
    env = sandbox
    lease = _plant_lease(env, pid=os.getpid())
    try:
        fails(env, "start", "backup", "--config", env.config, "--storage", f"local://{tmp_path / 'b'}", code=3,
              says=("cluster is locked by operation 999", f"pid {os.getpid()}"), hint="brsm resume 999")
        assert json.loads((lease / "holder.json").read_text())["pid"] == os.getpid(), "the lease is left alone"
    finally:
        import shutil

        shutil.rmtree(lease)
    assert last_op(env)["state"] == "REFUSED"  # a lock refusal did nothing: nothing was rolled back
    cluster_clean(env)
