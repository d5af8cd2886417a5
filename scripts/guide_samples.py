"""Regenerate the console samples of docs/user-guide.md from a real run, so they cannot drift.

    scripts/gen-guide-samples            # run every marked block on a fresh sandbox, rewrite the guide
    scripts/gen-guide-samples --check    # exit 1 if a block differs from what brsm prints now
    scripts/gen-guide-samples --stdout   # print the regenerated guide

A sample is a ```console block between ``<!-- sample: NAME -->`` and ``<!-- /sample -->``. Its
``$ …`` lines are run as written, in document order, in one shell environment on one sandbox (the
guide's ``/tmp/sb`` and ``/tmp/backups`` moved under a temporary dir, a fresh ``BRSM_HOME``); what
each prints (stdout and stderr, as a terminal shows them) replaces the lines after it. Lines that are
not commands are regenerated; blank lines between commands are kept.

What changes from run to run is normalised in two layers:

- :meth:`Normaliser.display` turns a run's output into what the guide shows: temporary paths back to
  the guide's, loopback addresses and ports, journal ids and ``user@host`` to fixed values, and every
  timestamp and backup name shifted by one offset, so the times in the guide stay consistent with
  each other. Values learnt from earlier output are mapped back into later commands (the guide's
  ``--name BACKUP_…`` runs with the real name).
- :func:`comparable` then blurs what a faster or slower run changes (times, durations, sizes,
  counts, table widths); ``tests/docs/test_guide_samples.py`` compares the guide and a new run
  through it, so any change of wording or layout fails until the guide is regenerated.

Pure functions only, apart from :func:`run_samples` (which runs the commands) and :func:`main`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "user-guide.md"

# The guide's own paths: each is moved under the run's temporary dir.
GUIDE_PATHS = ("/tmp/sb", "/tmp/backups")
# What the guide shows for values that differ on every run.
BASE_TIME = dt.datetime(2026, 11, 24, 15, 23, 30)
GUIDE_USER_HOST = "root@vm"
GUIDE_JOURNAL_ID = "11a5a154b44f"
GUIDE_NET = "127.79.0."
GUIDE_PORTS = (46211, 42331, 40917, 38575)
COLUMNS = "160"  # wide enough that no table wraps a temporary path

_OPEN = re.compile(r"^<!-- sample: ([a-z0-9-]+) -->\n```console\n(.*?)^```\n<!-- /sample -->$", re.S | re.M)


@dataclass
class Sample:
    name: str
    body: str          # the block's text between the fences
    start: int         # span of the body in the guide
    end: int

    def script(self) -> list[str | None]:
        """The block's commands in order, ``None`` where a blank line separates groups."""
        # a blank line right before a command separates groups; other blank lines are output
        items: list[str | None] = []
        lines = self.body.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                items.append(line[2:])
            elif (not line.strip() and items and items[-1] is not None
                  and i + 1 < len(lines) and lines[i + 1].startswith("$ ")):
                items.append(None)
        return items


def samples(text: str) -> list[Sample]:
    return [Sample(m.group(1), m.group(2), m.start(2), m.end(2)) for m in _OPEN.finditer(text)]


def render_block(script: list[str | None], outputs: list[str]) -> str:
    """A block's body from its commands and what each printed (already normalised)."""
    lines: list[str] = []
    it = iter(outputs)
    for item in script:
        if item is None:
            lines.append("")
            continue
        lines.append(f"$ {item}")
        out = next(it).rstrip()
        if out:
            lines.extend(ln.rstrip() for ln in out.split("\n"))
    return "\n".join(lines) + "\n"


def rewrite(text: str, bodies: dict[str, str]) -> str:
    out, pos = [], 0
    for s in samples(text):
        out.append(text[pos:s.start])
        out.append(bodies.get(s.name, s.body))
        pos = s.end
    out.append(text[pos:])
    return "".join(out)


# -- normalisation -------------------------------------------------------------------------------------

_ISO = re.compile(r"\b(\d{4})-(\d\d)-(\d\d)([ T])(\d\d):(\d\d)(?::(\d\d)(\.\d{1,6})?)?(Z)?")
_TIME = re.compile(r"\b(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)(?P<sep>[ T])(?P<h>\d\d):(?P<mi>\d\d)"
                   r"(?::(?P<s>\d\d)(?P<frac>\.\d{1,6})?)?(?P<z>Z)?|(?<![\d:.])(?P<bare>\d\d:\d\d:\d\d)(?![\d:])")
_BACKUP = re.compile(r"\bBACKUP_(\d{4})_(\d\d)_(\d\d)_(\d\d)_(\d\d)_(\d\d)\b")
_LOOPBACK = re.compile(r"\b127\.(\d{1,3})\.0\.(\d{1,3})\b")
_URL_PORT = re.compile(r"(http://127\.\d{1,3}\.0\.\d{1,3}):(\d{2,5})\b")


@dataclass
class Normaliser:
    """Maps one run's changing values to the guide's, and the guide's back into the next command."""

    tmp: str
    user_host: str = field(default_factory=lambda: f"{getpass.getuser()}@{socket.gethostname()}")
    journal_ids: tuple[str, ...] = ()
    shift: dt.timedelta | None = None
    ports: dict[str, int] = field(default_factory=dict)
    guide_names: list[str] = field(default_factory=list)  # backup names the guide shows, in order
    order: list[str] = field(default_factory=list)        # backup names this run made, in order

    def _shifted(self, t: dt.datetime) -> dt.datetime:
        # by whole minutes: a time shown to the minute (`show`'s created) stays the minute of the same time
        # shown to the second elsewhere
        if self.shift is None:
            self.shift = BASE_TIME.replace(second=0) - t.replace(second=0, microsecond=0)
        return t + self.shift

    def _time(self, m: re.Match) -> str:
        if m.group("bare"):
            h, mi, s = (int(x) for x in m.group("bare").split(":"))
            n = self._shifted(dt.datetime(2000, 1, 1, h, mi, s))
            return f"{n:%H:%M:%S}"
        y, mo, d, sep, h, mi, s, frac, z = m.group("y", "mo", "d", "sep", "h", "mi", "s", "frac", "z")
        t = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0),
                        int((frac or ".0")[1:].ljust(6, "0")))
        n = self._shifted(t)
        out = f"{n:%Y-%m-%d}{sep}{n:%H:%M}"
        if s is not None:
            out += f":{n:%S}"
            if frac is not None:
                out += f".{n.microsecond:06d}"[: len(frac)]
        return out + (z or "")

    def _backup(self, m: re.Match) -> str:
        real = m.group(0)
        if real not in self.order:
            self.order.append(real)
        t = dt.datetime(*(int(g) for g in m.groups()))
        return f"BACKUP_{self._shifted(t):%Y_%m_%d_%H_%M_%S}"

    def _port(self, m: re.Match) -> str:
        port = m.group(2)
        if port not in self.ports:
            self.ports[port] = GUIDE_PORTS[len(self.ports) % len(GUIDE_PORTS)]
        return f"{m.group(1)}:{self.ports[port]}"

    def display(self, out: str) -> str:
        out = _sub_in_columns(re.compile(re.escape(self.tmp) + r"/(\S*)"), lambda m: "/tmp/" + m.group(1), out)
        for k in range(len(self.tmp) - 1, len("/tmp/"), -1):  # a line brsm cut inside the path
            out = out.replace(self.tmp[:k] + "...", "/tmp/...")
        out = _sub_in_columns(_BACKUP, self._backup, out)
        out = _sub_in_columns(_TIME, self._time, out)
        out = _sub_in_columns(_URL_PORT, self._port, out)
        out = _sub_in_columns(_LOOPBACK, lambda m: f"{GUIDE_NET}{m.group(2)}", out)
        for jid in self.journal_ids:
            out = _sub_in_columns(re.compile(re.escape(jid)), lambda m: GUIDE_JOURNAL_ID, out)
        return _sub_in_columns(re.compile(re.escape(self.user_host)), lambda m: GUIDE_USER_HOST, out)

    def command(self, cmd: str) -> str:
        """The guide's command as it runs here: its paths moved, and the n-th backup name the guide
        shows (``guide_names``) replaced by the n-th this run made."""
        for p in GUIDE_PATHS:
            cmd = re.sub(re.escape(p) + r"\b", self.tmp + "/" + p.rsplit("/", 1)[1], cmd)
        for shown, real in zip(self.guide_names, self.order):
            cmd = cmd.replace(shown, real)
        return cmd

    def shown_command(self, cmd: str) -> str:
        """The guide's command as the guide shows it after this run: its backup names this run's."""
        for shown, real in zip(self.guide_names, self.order):
            cmd = cmd.replace(shown, _BACKUP.sub(self._backup, real))
        return cmd


def _sub_in_columns(pattern: re.Pattern, repl, text: str) -> str:
    """``pattern.sub(repl, text)``, keeping table columns aligned: where a value is followed by two or
    more spaces (a padded cell), the padding takes up the difference in length."""
    out, pos = [], 0
    for m in pattern.finditer(text):
        new = repl(m)
        out.append(text[pos:m.start()])
        out.append(new)
        pos = m.end()
        pad = re.match(r" {2,}", text[pos:])
        if pad and len(new) != len(m.group(0)):
            width = len(pad.group(0)) + len(m.group(0)) - len(new)
            out.append(" " * max(width, 2))
            pos += len(pad.group(0))
    out.append(text[pos:])
    return "".join(out)


def backup_names(text: str) -> list[str]:
    """The distinct backup names the samples' outputs show, in order (commands only repeat them)."""
    names = [m.group(0) for s in samples(text) for line in s.body.splitlines() if not line.startswith("$ ")
             for m in _BACKUP.finditer(line)]
    return list(dict.fromkeys(names))


_NUM_UNIT = re.compile(r"\b\d+(?:\.\d+)?\s?(?:B|KiB|MiB|GiB|TiB|s|ms)(?:/s)?\b")
_DIGITS = re.compile(r"(?<![0-9a-zA-Z_.])\d+(?:\.\d+)?(?![0-9a-zA-Z_])")
_HASH = re.compile(r"\b[0-9a-f]{64}\b")
# notes a slow machine adds and a fast one does not (brsm repeats them every 5 s while it waits)
_SLOW_NOTE = re.compile(r"^brsm: waiting on ")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"  # not digits: those are blurred below


def comparable(text: str) -> str:
    """What must not change between two runs of the same commands: the words, the order of lines, which
    values are equal to which. Times, durations, sizes, counts and column widths may change."""
    lines = []
    hashes: dict[str, str] = {}
    for line in text.splitlines():
        if _SLOW_NOTE.match(line):
            continue
        if line.endswith("...") and len(line) > 80:
            # brsm cut a long line (audit's facts) at a fixed width: where it cut moves with the length of
            # the values before it (an address's octet, a port): compare its start only
            line = line[:80] + "..."
        line = _HASH.sub(lambda m: hashes.setdefault(m.group(0), f"<sha256-{_LETTERS[len(hashes) % 26]}>"), line)
        line = _ISO.sub("<time>", line)
        line = _BACKUP.sub("BACKUP_<time>", line)
        line = re.sub(r"\b\d\d:\d\d:\d\d\b", "<time>", line)
        line = _NUM_UNIT.sub("<n>", line)
        line = _DIGITS.sub("<n>", line)
        line = re.sub(r"─+", "─", line)
        line = re.sub(r"\s+", " ", line).strip()
        lines.append(line)
    return "\n".join(lines)


# -- running -------------------------------------------------------------------------------------------


def _journal_ids(home: Path) -> tuple[str, ...]:
    import sqlite3

    db = home / "journal.db"
    if not db.exists():
        return ()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT value FROM journal_info WHERE key = 'journal_id'").fetchall()
    except sqlite3.Error:
        return ()
    finally:
        con.close()
    return tuple(str(r[0]) for r in rows)


def run_samples(text: str, tmp: Path, *, brsm_bin: str | None = None, timeout: float = 300) -> dict[str, str]:
    """Run every sample's commands in document order on one sandbox under ``tmp``; return each sample's
    regenerated body. The sandbox is always brought down."""
    tmp = tmp.resolve()
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    bindir = str(Path(brsm_bin or sys.executable).parent)
    env = dict(os.environ, BRSM_HOME=str(home), COLUMNS=COLUMNS, LINES="50", TERM="dumb", NO_COLOR="1",
               PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    for k in ("BRSM_CONFIG", "BRSM_SANDBOX_DIR", "BRSM_METRICS_FILE", "AWS_ENDPOINT_URL", "OSS_ENDPOINT"):
        env.pop(k, None)
    norm = Normaliser(str(tmp), guide_names=backup_names(text))
    sourced: list[str] = []
    bodies: dict[str, str] = {}
    try:
        for s in samples(text):
            outputs, shown = [], []
            for cmd in (c for c in s.script() if c is not None):
                real = norm.command(cmd)
                prefix = "".join(f"source {shlex.quote(f)} && " for f in sourced)
                p = subprocess.run(["bash", "-c", prefix + real], env=env, cwd=tmp, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=timeout)
                m = re.match(r"\s*(?:source|\.)\s+(\S+)", real)
                if m:
                    sourced.append(m.group(1))
                norm.journal_ids = _journal_ids(home)
                outputs.append(norm.display(p.stdout))
                shown.append(norm.shown_command(cmd))
            it = iter(shown)
            bodies[s.name] = render_block([None if c is None else next(it) for c in s.script()], outputs)
    finally:
        sb = tmp / "sb"
        if (sb / "sandbox.json").exists():
            subprocess.run(["bash", "-c", f"brsm sandbox down --dir {shlex.quote(str(sb))}"], env=env,
                           capture_output=True, timeout=120)
    return bodies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if a sample differs from a new run")
    g.add_argument("--stdout", action="store_true", help="print the regenerated guide")
    a = ap.parse_args(argv)
    text = GUIDE.read_text()
    with tempfile.TemporaryDirectory(prefix="g", dir="/tmp") as d:  # short: tables stay narrow
        bodies = run_samples(text, Path(d))
    new = rewrite(text, bodies)
    if a.check:
        stale = [s.name for s in samples(text) if comparable(s.body) != comparable(bodies[s.name])]
        if stale:
            print(f"docs/user-guide.md: sample(s) {', '.join(stale)} differ from what brsm prints now; "
                  "run scripts/gen-guide-samples", file=sys.stderr)
            return 1
        return 0
    if a.stdout:
        sys.stdout.write(new)
    else:
        GUIDE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
