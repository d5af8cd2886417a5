"""The direct data path: every host moves its own bytes to and from S3/OSS; brsm signs,
orchestrates and journals, and no file byte crosses it.

brsm runs a small helper on each host (``HostPort.start_helper``, see brsm.adapters.direct_helper for
its messages) and answers each of its "I need a URL for part n" with a URL signed for that part and its
Content-MD5, valid URL_SECONDS. The URL is handed over and forgotten: it carries a signature, so it is
never journaled, logged or put in an error. Parts are journaled as the hosts report them (the same
``PartUploaded`` events as the path through brsm), so a resume continues after the last stored part and
a rollback aborts the open upload, exactly as today.

Chosen per run by :func:`choose`: "direct" when the store signs URLs and every host runs the helper
(python3 >= 3.6) and reaches the store with a signed probe; else "via-brsm" with the reason.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from brsm.errors import OperationFailed, PreflightFailed, RemoteError, StorageError, VerificationFailed
from brsm.ports import HelperChannel, HostPort, Progress, RunsHelper, Storage, UploadState
from brsm.retries import HOST_PART, PROBE
from brsm.workflows.direct_rules import (AUTO, DIRECT, RESTART, RETRY, STOP, VIA_BRSM, Choice, attest, decide,
                                         part_failure, probe_refusal, python_refusal, scrubbed, store_full)

__all__ = ["AUTO", "DIRECT", "VIA_BRSM", "Choice", "Helpers", "choose", "download", "probe_host", "upload"]

URL_SECONDS = 900  # a part's URL is signed when the host asks for it: minutes are plenty
PROBE_PREFIX = ".brsm-direct-probe-"


async def _start(host: HostPort) -> HelperChannel:
    if not isinstance(host, RunsHelper):
        raise RemoteError(f"{host.name}: this host cannot run the direct-path helper", host=host.name)
    helper = await host.start_helper()
    try:
        why = python_refusal(await helper.receive())
    except BaseException:
        await helper.close()  # cancelled or lost while it said hello: no helper outlives its channel
        raise
    if why:
        status = await helper.close()
        raise RemoteError(f"{host.name}: {why}" + (f" (exit {status})" if status not in (None, 0) else ""),
                          host=host.name, hint="install python3 (3.6+) there, or use --data-path via-brsm")
    return helper


KEEP_PER_HOST = 4  # idle helpers kept per host (the default --per-host); see Helpers


class Helpers:
    """The helpers of one step, lent file by file: a worker's next file goes to the helper its last
    file finished on, so a host starts python3 once per worker, not once per file (a start costs
    ~0.1 s of the host's CPU: at 60 files it was most of the hosts' CPU). Only a helper whose file
    finished cleanly is kept; any error closes it. At most KEEP_PER_HOST are kept per host, fewer than
    a host's SSH connection has sessions, so a worker waiting for a session is never stuck behind idle
    helpers. Every kept helper is closed by :meth:`close` at the step's end, and dies with its SSH
    channel if brsm dies first."""

    def __init__(self) -> None:
        self._idle: dict[str, list[HelperChannel]] = {}
        self._live: dict[str, int] = {}
        self._closed = False
        self.started = 0

    @contextlib.asynccontextmanager
    async def lend(self, host: HostPort) -> AsyncIterator[HelperChannel]:
        idle = self._idle.get(host.name)
        if idle:
            helper = idle.pop()
        else:
            helper = await _start(host)
            self.started += 1
            self._live[host.name] = self._live.get(host.name, 0) + 1
        clean = False
        try:
            yield helper
            clean = True
        finally:
            if clean and not self._closed and self._live[host.name] <= KEEP_PER_HOST:
                self._idle.setdefault(host.name, []).append(helper)
            else:  # a file given up on (an error, a cancelled run): the helper stops mid-request
                self._live[host.name] -= 1
                await helper.close(at_once=not clean)

    async def close(self) -> None:
        self._closed = True
        idle = [h for hs in self._idle.values() for h in hs]
        self._idle.clear()
        await asyncio.gather(*(h.close() for h in idle), return_exceptions=True)


@contextlib.asynccontextmanager
async def _lent(helpers: Helpers | None, host: HostPort) -> AsyncIterator[HelperChannel]:
    """A helper from the step's pool, or one of its own when the caller keeps none."""
    own = helpers is None
    pool = Helpers() if own else helpers
    try:
        async with pool.lend(host) as helper:
            yield helper
    finally:
        if own:
            await pool.close()


async def probe_host(host: HostPort, storage: Storage, journal: Callable[[str, bool], None] | None = None) -> str | None:
    """Why ``host`` cannot go direct (no python3, too old, cannot reach the store), or None. The host's
    signed PUT that a busy store (a 503, a reset) refuses is sent again, as ``retries.PROBE`` says, so
    one transient error does not decide the data path of a whole run (brsm's own requests, opening and
    aborting the probe's upload, are retried by the storage). ``journal(key, gone)``: the probe's
    upload is journaled before it is opened and once aborted; one the store would not abort stays
    journaled, and the operation's cleanup or rollback aborts it (never an upload left unrecorded in
    the user's bucket)."""
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    note = journal or (lambda _key, _gone: None)
    data = f"brsm direct probe from {host.name}"
    try:
        helper = await _start(host)
    except RemoteError as e:
        return e.message.split(": ", 1)[-1] if e.message.startswith(f"{host.name}: ") else e.message
    upload = None
    try:
        md5 = _b64md5(data.encode())
        note(key, False)
        try:
            upload = await storage.begin_upload(key)
        except StorageError as e:
            if e.permanent:
                raise
            return f"the store did not open the probe's upload: {e.message[:160]}"
        why = "cannot reach the store: no answer"
        for attempt in range(PROBE.attempts):
            if attempt:
                await asyncio.sleep(PROBE.delay(attempt))
            await helper.send({"op": "probe", "url": await storage.part_url(key, upload, 1, md5, 120), "data": data})
            got = scrubbed(await helper.receive())
            if got and got.get("probe"):
                return None
            err = (got or {}).get("error") or {}
            why = probe_refusal(err)
            if got is None or part_failure(err) != RETRY or "expired" in str(err.get("message", "")).lower():
                return why  # an expired probe URL, signed a moment ago, means the clocks differ: asking again cannot help
        return why
    finally:
        await helper.close()
        if upload is not None:
            try:
                await storage.abort_upload(key, upload)
            except StorageError:
                pass  # journaled and not removed: the operation's cleanup or rollback aborts it
            else:
                note(key, True)
        elif journal is not None:
            note(key, True)  # never opened: nothing to remove


async def choose(asked: str, hosts: Sequence[HostPort], storage: Storage, progress: Progress,
                 journal: Callable[[str, bool], None] | None = None) -> Choice:
    """Preflight: try every host at once unless the choice is already made (``journal``: see probe_host)."""
    signs = storage.properties().signs_urls
    if asked == VIA_BRSM or not signs:
        c = decide(asked, signs, [])
    else:
        whys = await asyncio.gather(*(probe_host(h, storage, journal) for h in hosts))
        c = decide(asked, signs, [f"{h.name}: {w}" for h, w in zip(hosts, whys) if w])
    if asked == DIRECT and c.mode != DIRECT:
        raise PreflightFailed(f"--data-path direct is not possible: {c.why.removesuffix('; the bytes go through brsm')}",
                              hint="fix that host, or let brsm choose (--data-path auto)")
    progress.note(f"data path: {c.mode} ({c.why})")
    return c


def _b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@dataclass(frozen=True)
class Moved:
    sha256: str
    size: int


async def upload(key: str, path: str, size: int, host: HostPort, storage: Storage, progress: Progress, *,
                 state: UploadState, on_part: Callable[[UploadState], None], rate: int | None = None,
                 helpers: Helpers | None = None) -> Moved:
    """One host file into one object by the host itself, part by part; resumes after the journaled
    parts the store still has. Returns the whole file's SHA-256 as the host read it."""
    if size == 0:  # nothing to move: no helper, no multipart upload of nothing
        await storage.put_bytes(key, b"")
        return Moved(hashlib.sha256(b"").hexdigest(), 0)
    part_size = state.part_size or storage.properties().part_size
    upload_id, keep = await _resumable(key, storage, state, part_size)
    parts = list(keep)
    progress.advance("copy", sum(p["size"] for p in keep))
    async with _lent(helpers, host) as helper:
        await helper.send({"op": "put", "path": path, "size": size, "part_size": part_size, "skip": len(keep),
                           "rate": rate})

        signed: dict[int, tuple[str, int]] = {}  # part -> (Content-MD5, size) its URL was signed for

        def sign(m: dict[str, Any]) -> Awaitable[str]:
            signed[int(m["n"])] = (str(m["md5"]), int(m["size"]))
            return storage.part_url(key, upload_id, m["n"], m["md5"], URL_SECONDS)

        def stored(m: dict[str, Any]) -> None:
            n = int(m["part"])
            if signed.get(n, ("", -1))[1] != int(m["size"]):
                raise _lying(host, path, [f"part {n}: reported stored with {m['size']} bytes, but brsm signed "
                                          f"{'no URL for it' if n not in signed else f'its URL for {signed[n][1]}'}"])
            parts.append({"n": n, "etag": str(m["etag"]).strip('"'), "size": int(m["size"])})
            parts.sort(key=lambda p: p["n"])
            on_part(UploadState(upload_id, list(parts), part_size))
            progress.advance("copy", int(m["size"]))

        def fatal(what: str, m: dict[str, Any]) -> Exception:
            return OperationFailed(f"{host.name}:{path}: {what}: {m['error'].get('message', '')[:200]}",
                                   hint="a checkpoint file changed or vanished while it was copied?")

        done = await _converse(helper, host, key, f"sending {path}", sign, stored, fatal)
        if int(done["size"]) != size or [p["n"] for p in parts] != list(range(1, len(parts) + 1)):
            raise OperationFailed(f"{host.name}:{path}: the helper sent {done['size']} bytes in parts "
                                  f"{[p['n'] for p in parts]}, the file has {size}")
    # The host's SHA-256 is its word; what the store itself holds is checked against what it claimed.
    problems = attest(parts, {n: md5 for n, (md5, _) in signed.items()}, await storage.uploaded_parts(key, upload_id),
                      part_size, size)
    if problems:
        raise _lying(host, path, problems)
    await storage.finish_upload(key, upload_id, parts)
    info = await storage.stat(key)
    if info.size != size:
        raise _lying(host, path, [f"the stored object has {info.size} bytes, the file {size}"])
    return Moved(str(done["sha256"]), size)


def _lying(host: HostPort, path: str, problems: list[str]) -> StorageError:
    return StorageError(f"{host.name}:{path}: what the store holds is not what the host reported: "
                        f"{'; '.join(problems[:3])}" + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""),
                        permanent=True,
                        hint="the backup is not trusted; check that host (its python3, its helper, its clock) "
                             "or take the backup with --data-path via-brsm")


async def _resumable(key: str, storage: Storage, state: UploadState, part_size: int) -> tuple[str, list[dict]]:
    """The upload to continue and the journaled parts it still holds (1..k in order, each whole), or
    a new upload when there is none to continue."""
    if state.upload_id:
        stored = await storage.uploaded_parts(key, state.upload_id)
        if stored is not None:
            keep = []
            for p in sorted(state.parts, key=lambda p: p["n"]):
                s = stored.get(p["n"])
                if p["n"] != len(keep) + 1 or not s or s.get("etag") != p["etag"] or p["size"] != part_size:
                    break
                keep.append({"n": p["n"], "etag": p["etag"], "size": p["size"]})
            return state.upload_id, keep
    return await storage.begin_upload(key), []


GET_RANGE = 16 << 20  # bytes per ranged GET (the helper holds one range in memory)


async def download(key: str, sha256: str | None, size: int, host: HostPort, storage: Storage, progress: Progress,
                   dest: str, *, rate: int | None = None, task: str = "download", helpers: Helpers | None = None) -> None:
    """One object onto a host by the host itself: ranged GETs into ``dest.brsm-tmp``, the whole file's
    SHA-256 checked against the manifest there, fsynced, renamed into place; a file that does not
    match is removed and never renamed."""
    async with _lent(helpers, host) as helper:
        await helper.send({"op": "get", "path": dest, "size": size, "sha256": sha256, "part_size": GET_RANGE,
                           "rate": rate})
        def fatal(what: str, m: dict[str, Any]) -> Exception:
            code = m["error"].get("code")
            if code == "NotOurs":  # something not made by brsm sits at the temp name: never written through
                return OperationFailed(f"{host.name}: {m['error'].get('message', '')[:300]}",  # no retry helps
                                       hint="something other than brsm put it there: look at it, remove it, then run "
                                            "the command again (brsm never writes through a name it did not just create)")
            if code == "ChecksumMismatch":  # exit 6, as on the path through brsm: the stored bytes are wrong
                return damaged(key, storage, f"onto {host.name}: {m['error'].get('message', '')[:200]}")
            e = StorageError(f"{key} onto {host.name}:{dest}: {what}: {m['error'].get('message', '')[:200]}",
                             hint="the file was removed on the host; nothing else was touched")
            e.resend = True  # the host gave the file up: fetched again whole, it may go through
            return e

        done = await _converse(helper, host, key, f"writing {dest}", lambda m: storage.get_url(key, URL_SECONDS),
                               lambda m: progress.advance(task, int(m["size"])), fatal)
    if int(done["size"]) != size or (sha256 and done["sha256"] != sha256):
        raise damaged(key, storage, f"the helper wrote {done['size']} bytes sha256 {done['sha256'][:12]}…, its "
                                    f"manifest says {size} bytes {(sha256 or 'no checksum')[:12]}…")


def damaged(key: str, storage: Storage, how: str) -> VerificationFailed:
    """A fetched object that does not match its manifest: the backup is damaged (exit 6), and the way
    out is another backup, not this one again (the file was removed on the host, never renamed)."""
    return VerificationFailed(f"this backup is damaged: file {key} {how}",
                              hint=f"restore another one: `brsm show --storage {storage.uri}`")


async def _converse(helper: HelperChannel, host: HostPort, key: str, doing: str,
                    sign: Callable[[dict[str, Any]], Awaitable[str]], moved: Callable[[dict[str, Any]], None],
                    fatal: Callable[[str, dict[str, Any]], Exception]) -> dict[str, Any]:
    """brsm's side of one file's conversation with a helper, up to its final ``{"file": …}``: a URL
    signed for each part it asks for (handed over, never kept), its progress passed on, a failed part
    asked for again (a fresh URL) as ``retries.HOST_PART`` says, a fatal error raised as ``fatal`` says.

    This is the retry of a request the host makes, not brsm: the storage's retry layer never sees it,
    and can do nothing for it but sign a fresh URL, which is what happens here."""
    tries: dict[int, int] = {}
    last: dict[int, str] = {}  # each part's last error, without its URL (the helper never reports one)
    while True:
        m = scrubbed(await helper.receive())
        if m is None:
            raise RemoteError(f"{host.name}: the direct-path helper ended while {doing}", host=host.name)
        if "want" in m:
            if tries.get(m["n"], 0) >= HOST_PART.attempts:
                await helper.send({"op": "abort"})
                raise StorageError(f"{key}: part {m['n']} failed {HOST_PART.attempts} times on {host.name}: "
                                   f"{last.get(m['n'], '')}", permanent=False)
            await helper.send({"url": await sign(m)})
        elif "part" in m or "got" in m:
            moved(m)
        elif "error" in m:
            what = f"{m['error'].get('status')} {m['error'].get('code')}".strip()
            if m.get("fatal"):
                raise fatal(what, m)
            verdict = part_failure(m["error"])
            if verdict != RETRY:
                await helper.send({"op": "abort"})
                message = str(m["error"].get("message") or "")[:160]
                e = StorageError(f"{key}: part {m['n']} on {host.name}: {what}" + (f" ({message})" if message else ""),
                                 permanent=verdict == STOP,
                                 hint="the storage is full: free space or raise its quota" if verdict == STOP and
                                 store_full(m["error"]) else None)
                e.resend = verdict == RESTART  # the upload is gone: only the whole file again helps
                raise e
            tries[m["n"]] = tries.get(m["n"], 0) + 1
            last[m["n"]] = what
            await asyncio.sleep(HOST_PART.delay(tries[m["n"]]))
        elif "file" in m:
            return m

