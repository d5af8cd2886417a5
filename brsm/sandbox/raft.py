"""The meta Raft among several metads (``--meta-hosts 3``), as far as a backup tool can see it.

What it copies from ``src/kvstore/raftex/RaftPart.cpp`` (Nebula v3.8.0):
- only the leader takes writes; each write is a log entry the leader sends to every follower and
  applies (commits) once a majority holds it;
- a follower commits up to ``min(lastMatched, req.committed_log_id)`` of an append: it applies an
  entry only when a LATER append or heartbeat carries the commit id, so its state lags the leader's
  by about one heartbeat (``--raft_heartbeat_interval_secs``, 2 s here);
- a follower that hears no leader for an election timeout asks the others for votes; a peer votes for a
  candidate of a newer term whose log is at least as long as its own; the winner applies the entries
  its log holds (Raft commits them with its first entry of the new term) and leads;
- ``restoreMeta`` writes each metad's RocksDB locally, without Raft (RestoreProcessor.cpp ingests
  into the local engine), so it is not in the log and is never replicated.

The metads' Raft messages travel on the Raft port, the meta port + 1 (NebulaStore::getRaftAddr), which
serves before the metad's Thrift and web services do: MetaDaemonInit.cpp's initKV blocks until the
cluster id has come through Raft, so the Raft port must already answer.

What it simplifies: one entry per write (no batching of logs), entries travel as JSON over HTTP, a follower missing entries the leader no longer holds gets the leader's whole state
(InstallSnapshot), a leader does not step down when it loses its majority (its writes then fail), and the
log lives in ``<data_path>/nebula/0/raft.json`` (the WAL of a real metad).
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import rocksdict

from brsm.sandbox import control, layout
from brsm.sandbox.flags import parse_hostport

PUT, DEL = "p", "d"


class RaftError(Exception):
    """The leader could not get a write onto a majority."""


class Batch:
    """A write batch whose operations can be sent to the followers (rocksdict's cannot be read back)."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, bytes, bytes]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((PUT, key, value))

    def delete(self, key: bytes) -> None:
        self.ops.append((DEL, key, b""))


def encode_ops(ops: list[tuple[str, bytes, bytes]]) -> list[list[str]]:
    return [[op, k.hex(), v.hex()] for op, k, v in ops]


def decode_ops(ops: list[list[str]]) -> list[tuple[str, bytes, bytes]]:
    return [(op, bytes.fromhex(k), bytes.fromhex(v)) for op, k, v in ops]


def raft_addr(meta_addr: str) -> tuple[str, int]:
    """NebulaStore::getRaftAddr: a metad's Raft service listens on its meta port + 1."""
    host, port = parse_hostport(meta_addr)
    return host, port + 1


def follower_commit(last_matched: int, leader_committed: int) -> int:
    """RaftPart::processAppendLogRequest: a follower commits up to min(lastMatched, committed_log_id)."""
    return min(last_matched, leader_committed)


def grants_vote(my_term: int, my_last: tuple[int, int], voted: str | None, cand_term: int,
                cand_last: tuple[int, int], candidate: str, heard_leader_recently: bool) -> bool:
    """RaftPart::processAskForVoteRequest, reduced: a newer term, a log at least as up to date
    (last term, then last id), no other vote in that term, no live leader heard lately."""
    if cand_term < my_term or heard_leader_recently:
        return False
    if cand_term == my_term and voted not in (None, candidate):
        return False
    return cand_last >= my_last


@dataclass
class State:
    term: int = 1
    leader: str = ""
    voted: str | None = None
    last_id: int = 0
    last_term: int = 0
    committed: int = 0
    applied: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)  # entries not yet applied (follower) or not acked by all (leader)


class MetaRaft:
    def __init__(self, svc: Any, db: rocksdict.Rdict, peers: list[str], me: str, data_path: str,
                 heartbeat: float) -> None:
        self.svc = svc
        self.db = db
        self.me = me
        self.peers = [p for p in peers if p != me]
        self.size = len(peers)
        self.path = os.path.join(data_path, "nebula", "0", "raft.json")
        self.heartbeat = heartbeat
        self.election_timeout = 3 * heartbeat
        self.mu = threading.RLock()
        self.st = self._load(peers[0])
        self.match: dict[str, int | None] = {p: None for p in self.peers}
        self.last_heard = time.monotonic()
        self.no_candidacy_until = 0.0
        self.stop = threading.Event()

    # -- persistence (the WAL)
    def _load(self, first: str) -> State:
        try:
            with open(self.path) as fh:
                raw = json.load(fh)
            return State(**raw)
        except FileNotFoundError:
            return State(leader=first)

    def _save(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(self.st.__dict__, fh)
        os.replace(tmp, self.path)

    # -- roles
    @property
    def is_leader(self) -> bool:
        return self.st.leader == self.me

    def _publish(self) -> None:
        if self.st.leader:  # during an election the last leader known stays the hint
            self.svc.leader = self.st.leader
        self.svc.is_leader = self.is_leader

    def start(self) -> None:
        with self.mu:
            if self.is_leader:
                self._become_leader(self.st.term)
            self._publish()
        threading.Thread(target=self._ticker, name="raft", daemon=True).start()

    def _apply(self, upto: int) -> None:
        """Apply the held entries with ids up to ``upto`` to the local RocksDB (the state machine)."""
        keep = []
        for e in self.st.log:
            if e["id"] <= upto and e["id"] > self.st.applied:
                wb = rocksdict.WriteBatch(raw_mode=True)
                for op, k, v in decode_ops(e["ops"]):
                    wb.put(k, v) if op == PUT else wb.delete(k)
                self.db.write(wb)
                self.st.applied = e["id"]
            elif e["id"] > upto:
                keep.append(e)
        self.st.log = keep if not self.is_leader else self.st.log

    def _become_leader(self, term: int) -> None:
        self.st.term, self.st.leader = term, self.me
        self._apply(self.st.last_id)  # Raft commits what the new leader's log holds
        self.st.committed = self.st.applied = max(self.st.applied, self.st.last_id)
        self.st.log = []
        self.match = {p: None for p in self.peers}
        self._save()
        self.svc.log.info("raft: %s leads term %d at log %d", self.me, term, self.st.last_id)

    # -- leader: writes
    def write(self, ops: list[tuple[str, bytes, bytes]]) -> None:
        with self.mu:
            if not self.is_leader:
                raise RaftError(f"{self.me} does not lead")
            entry = {"id": self.st.last_id + 1, "term": self.st.term, "ops": encode_ops(ops)}
            self.st.log.append(entry)
            self.st.last_id, self.st.last_term = entry["id"], entry["term"]
            acks = 1 + sum(1 for p in self.peers if self._replicate(p))
            if acks * 2 <= self.size:
                self.st.log.remove(entry)
                self.st.last_id -= 1
                raise RaftError(f"log {entry['id']} reached {acks} of {self.size} metads")
            wb = rocksdict.WriteBatch(raw_mode=True)
            for op, k, v in ops:
                wb.put(k, v) if op == PUT else wb.delete(k)
            self.db.write(wb)
            self.st.committed = self.st.applied = entry["id"]
            self._trim()
            self._save()

    def _trim(self) -> None:
        lowest = min((m for m in self.match.values() if m is not None), default=None)
        if lowest is not None and all(m is not None for m in self.match.values()):
            self.st.log = [e for e in self.st.log if e["id"] > lowest]

    def _peer_http(self, peer: str) -> tuple[str, int]:
        return raft_addr(peer)

    def routes(self) -> dict[tuple[str, str], Any]:
        """What the Raft port answers: the peers' messages (RaftexService)."""
        return {("POST", "/raft/append"): lambda b, q: self.on_append(layout.json_body(b)),
                ("POST", "/raft/snapshot"): lambda b, q: self.on_snapshot(layout.json_body(b)),
                ("POST", "/raft/vote"): lambda b, q: self.on_vote(layout.json_body(b))}

    def leader(self) -> str:
        with self.mu:
            return self.st.leader

    def _replicate(self, peer: str) -> bool:
        """One append (or heartbeat) to ``peer`` carrying the entries it lacks and the commit id."""
        try:
            match = self.match.get(peer)
            if match is None:
                r = self._post(peer, "/raft/append", {"term": self.st.term, "leader": self.me, "entries": [],
                                                      "committed": self.st.committed, "probe": True})
                if r.get("term", 0) > self.st.term:
                    return False
                match = int(r["last_id"])
                held = {e["id"] for e in self.st.log}
                if match > self.st.last_id or (match < self.st.last_id and match + 1 not in held):
                    self._post(peer, "/raft/snapshot", {"term": self.st.term, "leader": self.me,
                                                        "rows": [[k.hex(), v.hex()] for k, v in self.db.items()],
                                                        "last_id": self.st.committed, "last_term": self.st.term})
                    match = self.st.committed
                self.match[peer] = match
            entries = [e for e in self.st.log if e["id"] > match]
            r = self._post(peer, "/raft/append", {"term": self.st.term, "leader": self.me, "entries": entries,
                                                  "committed": self.st.committed})
            if not r.get("ok"):
                self.match[peer] = None
                return False
            self.match[peer] = int(r["last_id"])
            return True
        except Exception as exc:  # noqa: BLE001 - a peer down: it catches up later
            self.svc.log.debug("raft: append to %s failed: %s", peer, exc)
            self.match[peer] = None
            return False

    def _post(self, peer: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return control.http_call(self._peer_http(peer), "POST", path, body, timeout=max(1.0, self.heartbeat))

    # -- follower side (admin HTTP routes)
    def on_append(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.mu:
            if req["term"] < self.st.term:
                return {"ok": False, "term": self.st.term, "last_id": self.st.last_id}
            if req["leader"] != self.st.leader or req["term"] != self.st.term:
                self.svc.log.info("raft: leader %s term %d", req["leader"], req["term"])
            self.st.term, self.st.leader = req["term"], req["leader"]
            self.last_heard = time.monotonic()
            for e in req["entries"]:
                if e["id"] == self.st.last_id + 1:
                    self.st.log.append(e)
                    self.st.last_id, self.st.last_term = e["id"], e["term"]
            commit = follower_commit(self.st.last_id, int(req["committed"]))
            if commit > self.st.applied:
                self._apply(commit)
                self.st.committed = commit
            if req["entries"] or commit:
                self._save()
            self._publish()
            return {"ok": True, "term": self.st.term, "last_id": self.st.last_id}

    def on_snapshot(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.mu:
            if req["term"] < self.st.term:
                return {"ok": False, "term": self.st.term}
            rows = {bytes.fromhex(k): bytes.fromhex(v) for k, v in req["rows"]}
            wb = rocksdict.WriteBatch(raw_mode=True)
            for k in list(self.db.keys()):
                if k not in rows:
                    wb.delete(k)
            for k, v in rows.items():
                wb.put(k, v)
            self.db.write(wb)
            self.st.term, self.st.leader = req["term"], req["leader"]
            self.st.last_id = self.st.committed = self.st.applied = int(req["last_id"])
            self.st.last_term, self.st.log = int(req["last_term"]), []
            self.last_heard = time.monotonic()
            self._save()
            self._publish()
            self.svc.log.info("raft: installed a snapshot of %d keys at log %d", len(rows), self.st.last_id)
            return {"ok": True}

    def on_vote(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.mu:
            recent = (self.is_leader and time.monotonic() >= self.no_candidacy_until) or \
                (not self.is_leader and time.monotonic() - self.last_heard < self.election_timeout)
            ok = grants_vote(self.st.term, (self.st.last_term, self.st.last_id), self.st.voted, req["term"],
                             (req["last_term"], req["last_id"]), req["candidate"], recent)
            if ok:
                self.st.term, self.st.voted, self.st.leader = req["term"], req["candidate"], ""
                self.last_heard = time.monotonic()
                self._save()
                self._publish()
            return {"granted": ok, "term": self.st.term}

    def step_down(self, seconds: float) -> dict[str, Any]:
        """A forced leader change (sandbox fault): the leader stops leading and stands for no election
        for ``seconds``, so a follower times out and is elected with what its log holds."""
        with self.mu:
            was = self.is_leader
            self.no_candidacy_until = time.monotonic() + seconds
            if was:
                self.st.leader = ""
                self.last_heard = time.monotonic()
                self._save()
                self._publish()
            return {"was_leader": was, "term": self.st.term}

    def state(self) -> dict[str, Any]:
        with self.mu:
            return {"me": self.me, "leader": self.st.leader, "term": self.st.term, "last_id": self.st.last_id,
                    "committed": self.st.committed, "applied": self.st.applied, "held": len(self.st.log)}

    # -- the clock
    def _ticker(self) -> None:
        while not self.stop.wait(self.heartbeat if self.is_leader else 0.2):
            try:
                if self.is_leader:
                    with self.mu:
                        for p in self.peers:
                            self._replicate(p)
                        self._trim()
                elif time.monotonic() - self.last_heard > self.election_timeout + random.uniform(0, self.heartbeat) \
                        and time.monotonic() >= self.no_candidacy_until:
                    self._campaign()
            except Exception:  # noqa: BLE001
                self.svc.log.exception("raft tick failed")

    def _campaign(self) -> None:
        with self.mu:
            term = self.st.term + 1
            self.st.term, self.st.voted, self.st.leader = term, self.me, ""
            self.last_heard = time.monotonic()
            self._save()
            self._publish()
            req = {"term": term, "candidate": self.me, "last_id": self.st.last_id, "last_term": self.st.last_term}
        votes = 1
        for p in self.peers:
            try:
                r = self._post(p, "/raft/vote", req)
                votes += bool(r.get("granted"))
            except Exception:  # noqa: BLE001 - a peer down votes for nobody
                pass
        with self.mu:
            if votes * 2 > self.size and self.st.term == term and not self.st.leader:
                self._become_leader(term)
                for p in self.peers:
                    self._replicate(p)
                self._publish()


class ReplicatedDB:
    """What MetaHandler writes through: every write of a leader goes through the Raft log; reads, and
    writes in a rocksdict WriteBatch (restoreMeta's, local on purpose), go to the local RocksDB."""

    def __init__(self, db: rocksdict.Rdict, raft: MetaRaft) -> None:
        self._db = db
        self._raft = raft

    def write(self, batch: Any) -> None:
        if isinstance(batch, Batch):
            self._raft.write(batch.ops)
        else:
            self._db.write(batch)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._raft.write([(PUT, key, value)])

    def delete(self, key: bytes) -> None:
        self._raft.write([(DEL, key, b"")])

    def __getattr__(self, name: str) -> Any:  # get, items, flush, ingest_external_file, close
        return getattr(self._db, name)


__all__ = ["MetaRaft", "ReplicatedDB", "Batch", "RaftError", "follower_commit", "grants_vote", "raft_addr"]
