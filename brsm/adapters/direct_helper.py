"""The host side of the direct data path: a program brsm sends over SSH and runs with the
host's own ``python3 -c`` (standard library only, Python >= 3.6; nothing installed, nothing left
behind), so that the bytes go host <-> object store and never through brsm.

brsm alone holds the credentials. The helper gets one signed URL per part, asked for the moment it
needs it (a URL lives minutes, and a URL for a part is signed with that part's Content-MD5, which
OSS's V1 signature covers): JSON lines both ways, one file at a time.

    brsm -> helper   {"op": "put", "path": P, "size": S, "part_size": N, "skip": K}
    helper -> brsm   {"want": "url", "n": 1, "size": 8388608, "md5": "<base64>"}
    brsm -> helper   {"url": "https://..."}            (or {"op": "abort"})
    helper -> brsm   {"part": 1, "etag": "...", "size": 8388608}
                     ... one part after another ...
    helper -> brsm   {"file": P, "size": S, "sha256": "<hex of the whole file>"}

    brsm -> helper   {"op": "get", "path": P, "size": S, "sha256": H, "part_size": N}
    helper -> brsm   {"want": "url", "n": 1, "offset": 0, "size": 8388608}
    brsm -> helper   {"url": "https://..."}
    helper -> brsm   {"got": 1, "size": 8388608}
                     ... one range after another ...
    helper -> brsm   {"file": P, "size": S, "sha256": H}     (written to P.brsm-tmp, checked, fsynced, renamed)

    brsm -> helper   {"op": "probe", "url": U, "data": "..."}   (preflight: can this host reach the store?)
    helper -> brsm   {"probe": true}  or  {"probe": false, "error": {...}}

``skip``: parts an earlier run stored (journaled by brsm): read for the whole file's SHA-256, not sent.
A failed request is {"error": {...}, "n": k} without the URL (it carries a signature); brsm answers with
a new URL for the same part (a retry, or a renewal after expiry) or aborts the file. ``rate`` (bytes/s)
in a command bounds this helper's sending and receiving.

The helper dies with its SSH channel: a thread reads the commands, and at end of input (brsm killed,
the connection dropped) it ends the process at once, in the middle of a request if need be, so no
upload goes on from any host once brsm is gone.
"""
import base64
import hashlib
import http.client
import json
import os
import queue
import re
import stat
import sys
import threading
import time
from urllib.parse import urlsplit

VERSION = 1
CHUNK = 1 << 20
TMP_SUFFIX = ".brsm-tmp"


def out(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


FINISHED = threading.Event()  # brsm said "exit": the end of input that follows is no loss


def reader(q):
    for line in sys.stdin:
        line = line.strip()
        if line:
            cmd = json.loads(line)
            if cmd.get("op") == "exit":
                FINISHED.set()
            q.put(cmd)
    if FINISHED.is_set():
        return  # main ends the process once it reaches the "exit"
    os._exit(3)  # brsm is gone: stop now, whatever is in flight


class Pace:
    def __init__(self, rate):
        self.rate, self.t0, self.n = rate, time.monotonic(), 0

    def take(self, n):
        if not self.rate:
            return
        self.n += n
        ahead = self.n / float(self.rate) - (time.monotonic() - self.t0)
        if ahead > 0:
            time.sleep(ahead)


def request(method, url, body=None, headers=None, sink=None, pace=None):
    """One HTTP request; returns (status, headers, body or None when streamed into ``sink``)."""
    u = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(u.hostname, u.port, timeout=120)
    try:
        target = u.path + ("?" + u.query if u.query else "")
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        if body is not None:
            view = memoryview(body)
            for i in range(0, len(view), CHUNK):
                if pace:
                    pace.take(len(view[i:i + CHUNK]))
                conn.send(view[i:i + CHUNK])
        r = conn.getresponse()
        if sink is not None and 200 <= r.status < 300:
            while True:
                block = r.read(CHUNK)
                if not block:
                    break
                if pace:
                    pace.take(len(block))
                sink(block)
            return r.status, dict(r.getheaders()), None
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def scrub(text):
    """An exception's text without any URL query (http.client's InvalidURL quotes the whole URL, and a
    presigned URL's query holds its signature): brsm must never get a signature back in an error."""
    return re.sub(r"\?[^\s'\"]*", "?...", text)


def element(text, name):
    start, end = "<%s>" % name, "</%s>" % name
    return text.split(start, 1)[1].split(end, 1)[0] if start in text and end in text else ""


def error_of(status, body):
    """The store's error as code and message only: S3's SignatureDoesNotMatch body also carries the
    canonical request (the URL's query, the key id in it), which brsm must not get to print."""
    text = (body or b"")[:4000].decode("utf-8", "replace")
    code = element(text, "Code")
    message = element(text, "Message") if code else text[:300]
    return {"status": status, "code": code, "message": scrub(message)[:300]}


def next_url(q, n):
    """The URL for part n from brsm, or None when brsm aborts the file, or closes the helper in the
    middle of it (a cancelled run): its "exit" is put back for the main loop, which then ends, so no
    helper is left waiting for a URL that will never come."""
    while True:
        cmd = q.get()
        if "url" in cmd:
            return cmd["url"]
        if cmd.get("op") == "abort":
            return None
        if cmd.get("op") == "exit":
            q.put(cmd)
            return None


def put(q, cmd, pace):
    path, size, part_size, skip = cmd["path"], int(cmd["size"]), int(cmd["part_size"]), int(cmd.get("skip", 0))
    whole = hashlib.sha256()
    with open(path, "rb") as f:
        n, done = 0, 0
        while done < size or (size == 0 and n == 0):
            n += 1
            data = f.read(min(part_size, size - done))
            if len(data) != min(part_size, size - done):
                out({"error": {"status": 0, "code": "SizeChanged", "message": "%s is shorter than %d bytes" % (path, size)},
                     "n": n, "fatal": True})
                return
            whole.update(data)
            done += len(data)
            if n <= skip:
                continue
            md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
            while True:
                out({"want": "url", "n": n, "size": len(data), "md5": md5})
                url = next_url(q, n)
                if url is None:
                    return
                try:
                    status, headers, body = request("PUT", url, data, {
                        "Content-Length": str(len(data)), "Content-MD5": md5,
                        "Content-Type": "application/octet-stream"}, pace=pace)
                except (OSError, http.client.HTTPException) as e:
                    out({"error": {"status": 0, "code": type(e).__name__, "message": scrub(str(e))[:300]}, "n": n})
                    continue
                if 200 <= status < 300:
                    etag = {k.lower(): v for k, v in headers.items()}.get("etag", "")
                    out({"part": n, "etag": etag, "size": len(data)})
                    break
                out({"error": error_of(status, body), "n": n})
            if size == 0:
                break
        if f.read(1):
            out({"error": {"status": 0, "code": "SizeChanged", "message": "%s is longer than %d bytes" % (path, size)},
                 "n": n, "fatal": True})
            return
    out({"file": path, "size": size, "sha256": whole.hexdigest()})


KINDS = ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
         (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def create_exclusive(tmp):
    """The temp file, created exclusively and without following a link (O_CREAT|O_EXCL|O_NOFOLLOW), or
    None once the refusal is reported. A name already taken is looked at with lstat: a regular file
    (a temp an interrupted get left) is removed and the create tried again; anything else (a symlink, a
    directory, a FIFO) brsm did not create, and writing through it would put the backup's bytes where
    it points: refused, and left as it is."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(3):
        try:
            return os.open(tmp, flags, 0o644)
        except FileExistsError:
            st = os.lstat(tmp)
            kind = next((w for test, w in KINDS if test(st.st_mode)), None)
            if kind is not None or not stat.S_ISREG(st.st_mode):
                out({"error": {"status": 0, "code": "NotOurs",
                               "message": "refusing to write %s: a %s brsm did not create is in the way"
                                          % (tmp, kind or "non-regular file")}, "n": 0, "fatal": True})
                return None
            os.unlink(tmp)  # unlink never follows a link
    out({"error": {"status": 0, "code": "NotOurs", "message": "%s keeps reappearing" % tmp}, "n": 0, "fatal": True})
    return None


def get(q, cmd, pace):
    path, size, want = cmd["path"], int(cmd["size"]), cmd.get("sha256")
    part_size = int(cmd["part_size"])
    tmp = path + TMP_SUFFIX
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        os.makedirs(d)
    fd = create_exclusive(tmp)
    if fd is None:
        return
    whole = hashlib.sha256()
    ok, done = False, 0
    with os.fdopen(fd, "wb") as f:
        try:
            n = 0
            while done < size:
                n += 1
                length = min(part_size, size - done)
                while True:
                    out({"want": "url", "n": n, "offset": done, "size": length})
                    url = next_url(q, n)
                    if url is None:
                        return
                    got = []
                    try:
                        status, _h, body = request("GET", url, headers={
                            "Range": "bytes=%d-%d" % (done, done + length - 1)}, sink=got.append, pace=pace)
                    except (OSError, http.client.HTTPException) as e:
                        out({"error": {"status": 0, "code": type(e).__name__, "message": scrub(str(e))[:300]}, "n": n})
                        continue
                    data = b"".join(got)
                    if 200 <= status < 300 and len(data) == length:
                        break
                    err = error_of(status, body) if body is not None else {
                        "status": status, "code": "ShortRead", "message": "%d of %d bytes" % (len(data), length)}
                    out({"error": err, "n": n})
                f.write(data)
                whole.update(data)
                done += length
                out({"got": n, "size": length})
            f.flush()
            os.fsync(f.fileno())
            ok = not want or whole.hexdigest() == want
        finally:
            if not ok:  # removed before anything is reported: brsm may act on the report at once
                f.close()
                os.unlink(tmp)
    if not ok:
        if done == size:
            out({"error": {"status": 0, "code": "ChecksumMismatch",
                           "message": "sha256 %s, the manifest says %s" % (whole.hexdigest(), want)},
                 "n": 0, "fatal": True})
        return
    os.rename(tmp, path)
    fd = os.open(d or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    out({"file": path, "size": size, "sha256": whole.hexdigest()})


def probe(cmd):
    """Can this host reach the store? One signed PUT of a few known bytes (a part brsm aborts)."""
    data = cmd["data"].encode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    try:
        status, _h, body = request("PUT", cmd["url"], data, {
            "Content-Length": str(len(data)), "Content-MD5": md5, "Content-Type": "application/octet-stream"})
    except (OSError, http.client.HTTPException) as e:
        out({"probe": False, "error": {"status": 0, "code": type(e).__name__, "message": scrub(str(e))[:300]}})
        return
    if 200 <= status < 300:
        out({"probe": True})
    else:
        out({"probe": False, "error": error_of(status, body)})


def main():
    q = queue.Queue()
    t = threading.Thread(target=reader, args=(q,))
    t.daemon = True
    t.start()
    out({"hello": VERSION, "python": "%d.%d.%d" % sys.version_info[:3]})
    while True:
        cmd = q.get()
        op = cmd.get("op")
        pace = Pace(cmd.get("rate"))
        try:
            if op == "put":
                put(q, cmd, pace)
            elif op == "get":
                get(q, cmd, pace)
            elif op == "probe":
                probe(cmd)
            elif op == "exit":
                return
        except (OSError, ValueError) as e:
            out({"error": {"status": 0, "code": type(e).__name__, "message": scrub(str(e))[:300]}, "n": 0, "fatal": True})


if __name__ == "__main__":
    main()
