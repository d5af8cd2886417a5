"""One fake host: an in-memory file tree and the services installed on it."""
from __future__ import annotations

import posixpath


class Machine:
    """One host: an in-memory file system plus the services installed on it.

    A service's process is ``running`` (alive) and, separately, ``listening`` on its port. A start or
    stop completes only after ``pending`` observations (a status call or a port probe) have seen the
    old state, as the real script returns long before the daemon listens or exits (FakeCluster's
    ``start_service``/``stop_service``/``observe``)."""

    def __init__(self, name: str, *, install_dir: str, services: dict[str, int], free: int) -> None:
        self.name = name
        self.install_dir = install_dir
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        self.dirs: set[str] = {"/"}
        self.inodes: dict[str, int] = {}  # a dir's inode, given when first asked for; a move keeps it
        self._next_inode = 100
        self.file_ids: dict[str, tuple[int, int]] = {}  # a file's (inode, birth ns), given when first asked for
        self.services = dict(services)  # service -> port
        self.running: dict[str, bool] = {s: True for s in services}
        self.listening: dict[str, bool] = {s: True for s in services}
        self.pending: dict[str, tuple[str, int]] = {}  # service -> ("start"|"stop", observations left)
        self.pids: dict[str, int] = {s: 1000 + p for s, p in services.items()}
        # flags a daemon was given on its command line after nebula.service's --flagfile (a test
        # sets them: a daemon started by hand or by a unit file), seen in /proc/<pid>/cmdline
        self.command_line_flags: dict[str, list[str]] = {}
        self.capacity = free
        self.clock_offset = 0.0  # seconds this host's clock is ahead of the operator machine's
        self.holders: dict[str, int] = {}  # a path some process uses (its cwd, an open file) -> its pid

    def __setstate__(self, state: dict) -> None:
        """A machine pickled by an older brsm (the kept journals' worlds, tests/journal_fixtures) lacks
        what was added since: those start empty, as on a machine where nothing set them."""
        self.__dict__.update({"command_line_flags": {}, "holders": {}, "file_ids": {}, **state})

    def cmdline(self, pid: int) -> bytes | None:
        """``/proc/<pid>/cmdline`` of a running daemon (NUL-terminated arguments), None for no such process."""
        for svc, p in self.pids.items():
            if p == pid and self.running.get(svc):
                argv = [f"{self.install_dir}/bin/nebula-{svc}", f"--flagfile={self.install_dir}/etc/nebula-{svc}.conf",
                        *self.command_line_flags.get(svc, [])]
                return b"".join(a.encode() + b"\0" for a in argv)
        return None

    # -- file tree helpers (paths are absolute and normalised) --------------------------------
    @staticmethod
    def norm(path: str) -> str:
        p = posixpath.normpath(path)
        return "/" + p.lstrip("/") if p.startswith("//") else p

    def is_dir(self, path: str) -> bool:
        path = self.norm(path)
        if path in self.dirs:
            return True
        pre = path.rstrip("/") + "/"
        return any(f.startswith(pre) for f in self.files) or any(d.startswith(pre) for d in self.dirs)

    def exists(self, path: str) -> bool:
        return self.norm(path) in self.files or self.is_dir(path)

    def mkdirs(self, path: str) -> None:
        path = self.norm(path)
        while path not in self.dirs:
            if path in self.files:
                raise NotADirectoryError(path)
            self.dirs.add(path)
            path = posixpath.dirname(path)

    def inode(self, path: str) -> int:
        path = self.norm(path)
        if path not in self.inodes:
            self._next_inode += 1
            self.inodes[path] = self._next_inode
        return self.inodes[path]

    def file_ident(self, path: str) -> tuple[int, int]:
        """A file's (inode, birth and change time in ns): the same until the file is written again
        (a write here makes a new file, as RocksDB and brsm's restore do), kept by a move."""
        path = self.norm(path)
        if path not in self.file_ids:
            self._next_inode += 1
            self.file_ids[path] = (self._next_inode, 1_700_000_000_000_000_000 + self._next_inode)
        return self.file_ids[path]

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = self.norm(path)
        self.mkdirs(posixpath.dirname(path))
        self.files[path] = bytes(data)
        self.modes[path] = mode
        self.file_ids.pop(path, None)

    def link(self, src: str, dst: str) -> None:
        """A hard link, as a checkpoint makes of the live SSTs: another name of the same file."""
        ident = self.file_ident(src)
        self.put(dst, self.files[self.norm(src)], self.modes.get(self.norm(src), 0o644))
        self.file_ids[self.norm(dst)] = ident

    def under(self, path: str) -> list[str]:
        pre = self.norm(path).rstrip("/") + "/"
        return sorted(f for f in self.files if f.startswith(pre))

    def remove_tree(self, path: str) -> None:
        path = self.norm(path)
        pre = path.rstrip("/") + "/"
        self.files.pop(path, None)
        self.modes.pop(path, None)
        self.file_ids.pop(path, None)
        for f in [f for f in self.files if f.startswith(pre)]:
            del self.files[f]
            self.modes.pop(f, None)
            self.file_ids.pop(f, None)
        self.dirs = {d for d in self.dirs if d != path and not d.startswith(pre)} | {"/"}
        self.inodes = {d: i for d, i in self.inodes.items() if d != path and not d.startswith(pre)}

    def move(self, src: str, dst: str) -> None:
        src, dst = self.norm(src), self.norm(dst)
        if not self.exists(src):
            raise FileNotFoundError(src)
        if src in self.files:
            if self.is_dir(dst):
                raise IsADirectoryError(dst)
            ident = self.file_ids.pop(src, None)
            self.put(dst, self.files.pop(src), self.modes.pop(src, 0o644))
            if ident is not None:
                self.file_ids[dst] = ident
            return
        if self.exists(dst) and (dst in self.files or self.under(dst) or
                                 any(d.startswith(dst + "/") for d in self.dirs)):
            raise FileExistsError(dst)  # rename(2): target dir must be empty
        if dst == src or dst.startswith(src + "/"):
            raise OSError(f"cannot move {src} into itself")
        pre = src + "/"
        self.mkdirs(posixpath.dirname(dst))
        for f in [f for f in self.files if f.startswith(pre)]:
            self.files[dst + f[len(src):]] = self.files.pop(f)
            self.modes[dst + f[len(src):]] = self.modes.pop(f, 0o644)
            if f in self.file_ids:
                self.file_ids[dst + f[len(src):]] = self.file_ids.pop(f)
        moved = {d for d in self.dirs if d == src or d.startswith(pre)}
        self.dirs = (self.dirs - moved) | {dst + d[len(src):] for d in moved} | {dst}
        inodes: dict[str, int] = {}
        for d, i in self.inodes.items():  # a rename keeps the moved dirs' inodes; the replaced target's go
            if d == src or d.startswith(pre):
                inodes[dst + d[len(src):]] = i
            elif d != dst and not d.startswith(dst + "/"):
                inodes[d] = i
        self.inodes = inodes

    def used(self) -> int:
        return sum(len(v) for v in self.files.values())

    def free(self) -> int:
        return max(0, self.capacity - self.used())
