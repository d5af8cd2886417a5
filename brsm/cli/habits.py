"""nebula-br's command lines, recognised when brsm cannot parse them: "did you mean …" with the brsm
command that does it, built from what was typed.

    br backup full --meta M --storage S       ->  brsm start backup --meta M --storage S
    br restore full --meta M --storage S --name N  ->  brsm start restore --meta M --storage S --name N
    br cleanup --meta M --storage S --name N  ->  brsm cleanup N --meta M --storage S
    --s3.endpoint URL, --s3.region R          ->  --s3-endpoint URL, --s3-region R
    --s3.access_key / --s3.secret_key         ->  dropped: keys come from the environment

Pure: ``suggest(args)`` only reads the arguments. The suggestion is scrubbed of credentials by the caller's
printer as every line is; keys given as nebula-br flags are never repeated in it.
"""
from __future__ import annotations

import re
import shlex

FLAGS = {"--s3.endpoint": "--s3-endpoint", "--s3.region": "--s3-region", "--oss.endpoint": "--oss-endpoint"}
SECRETS = ("--s3.access_key", "--s3.secret_key", "--oss.access_key", "--oss.secret_key")
KEYS = {"s3": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", "oss": "OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET"}
GLOBAL = ("--quiet", "--debug")


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """(brsm's global flags, the rest)."""
    return [a for a in args if a in GLOBAL], [a for a in args if a not in GLOBAL]


def _flags(rest: list[str]) -> tuple[list[str], list[str], str | None]:
    """nebula-br's flag spellings in brsm's; (flags, schemes whose keys were dropped, --name's value)."""
    out: list[str] = []
    dropped: list[str] = []
    name = None
    i = 0
    while i < len(rest):
        a = rest[i]
        flag, eq, value = a.partition("=")
        takes_next = not eq and i + 1 < len(rest) and not rest[i + 1].startswith("-")
        if flag in SECRETS:
            dropped.append(flag[2:].split(".")[0])
            i += 1 if eq or not takes_next else 2
            continue
        if flag == "--name":
            name = value if eq else (rest[i + 1] if takes_next else None)
            i += 1 if eq or not takes_next else 2
            continue
        out.append(FLAGS.get(flag, flag) + (eq + value if eq else ""))
        i += 1
    return out, sorted(set(dropped)), name


def _line(words: list[str]) -> str:
    return "brsm " + shlex.join(words)


def _keys_note(dropped: list[str]) -> str:
    return "".join(f"; brsm takes {s.upper()} keys from {KEYS[s]}, never from flags" for s in dropped)


def suggest(args: list[str]) -> str | None:
    """A hint for a nebula-br habit in ``args`` (the command line brsm could not parse), or None."""
    glob, rest = _split(args)
    if not rest:
        return None
    cmd = rest[0]
    if cmd in ("backup", "restore") or (cmd == "start" and len(rest) > 2 and rest[1] in ("backup", "restore")
                                        and rest[2] in ("full", "incr")):
        kind = rest[1] if cmd == "start" else cmd
        tail = rest[2:] if cmd == "start" else rest[1:]
        level = tail[0] if tail and tail[0] in ("full", "incr") else None
        flags, dropped, name = _flags(tail[1:] if level else tail)
        if kind == "restore":
            flags += ["--name", name or "NAME"]
        what = "every brsm backup is full" if kind == "backup" else "a restore is always of the whole backup"
        if level == "incr":
            what = "brsm makes full backups only (no incremental ones)"
        return f"did you mean `{_line(glob + ['start', kind] + flags)}`? ({what}){_keys_note(dropped)}"
    if cmd == "cleanup" and any(a == "--name" or a.startswith("--name=") for a in rest):
        flags, dropped, name = _flags(rest[1:])
        return (f"did you mean `{_line(glob + ['cleanup', name or 'NAME'] + flags)}`? (the backup's name is an "
                f"argument, not --name){_keys_note(dropped)}")
    if cmd == "start" and len(rest) > 1 and rest[1] == "restore" and any(
            a == "--spaces" or a.startswith("--spaces=") for a in rest):
        return ("a restore puts back every space of the backup (as nebula-br's does): there is no --spaces on "
                "restore; to keep some spaces apart, back them up apart: `brsm start backup --spaces a,b`")
    if cmd in ("show", "cleanup", "start") and any(a.partition("=")[0] in FLAGS or a.partition("=")[0] in SECRETS
                                                   for a in rest):
        flags, dropped, name = _flags(rest[1:])
        head = rest[:1] + ([name] if cmd == "cleanup" and name else [])
        return f"did you mean `{_line(glob + head + flags)}`?{_keys_note(dropped)}"
    return None


def without_click_guess(message: str) -> str:
    """Click's own guess ("Did you mean 'resume'?", "(Possible options: --meta)") dropped: beside the
    nebula-br suggestion it only misleads.

    >>> without_click_guess("No such command 'restore'. Did you mean 'resume'?")
    "No such command 'restore'."
    >>> without_click_guess("No such option: --name (Possible options: --meta)")
    'No such option: --name'
    """
    return re.sub(r"\s*(Did you mean [^?]*\?|\(Possible options: [^)]*\))\s*$", "", message)
