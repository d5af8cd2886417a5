"""The batch reader's parser (brsm.adapters.remote_tar): a member counts for a requested path only
when its name is exactly that path, it is a regular file, and its bytes arrived whole."""
from __future__ import annotations

import doctest
import io
import tarfile

from brsm.adapters import remote_tar
from brsm.adapters.remote_tar import parse_tar_members


def tar_of(*members: tuple[str, bytes | str]) -> bytes:
    """A GNU tar of (name, bytes) regular files, or (name, "->target") symlinks, or (name, "/") dirs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, body in members:
            info = tarfile.TarInfo(name)
            if isinstance(body, str) and body.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, body[2:]
                t.addfile(info)
            elif body == "/":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(body)
                t.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def answers(data: bytes, paths: list[str]) -> list[tuple[str, bytes | None, str]]:
    return [(r.path, r.data, r.problem) for r in parse_tar_members(data, paths)]


def test_doctests():
    assert doctest.testmod(remote_tar).failed == 0


def test_every_file_read_whole_in_the_order_asked():
    long = "/d/" + "x" * 300  # a GNU long name
    odd = "/d/new\nline ü \udcff"  # a name that is not UTF-8 survives as find's decoding gives it
    data = tar_of(("/d/a", b"alpha"), (long, b"L" * 5000), ("/d/empty", b""), (odd, b"odd"))
    assert answers(data, [odd, "/d/empty", "/d/a", long]) == [
        (odd, b"odd", ""), ("/d/empty", b"", ""), ("/d/a", b"alpha", ""), (long, b"L" * 5000, "")]


def test_a_missing_member_fails_only_that_file():
    got = answers(tar_of(("/d/a", b"a")), ["/d/a", "/d/b"])
    assert got == [("/d/a", b"a", ""), ("/d/b", None, "not in the archive")]


def test_a_renamed_member_is_never_taken_for_the_path_asked():
    # the leading "/" stripped (a tar without --absolute-names), or another name: nothing for /d/a
    got = answers(tar_of(("d/a", b"a"), ("/d/A", b"A")), ["/d/a"])
    assert got == [("/d/a", None, "not in the archive")]


def test_a_symlink_or_a_directory_in_its_place_is_not_a_regular_file():
    got = answers(tar_of(("/d/l", "->/etc/passwd"), ("/d/dir", "/"), ("/d/ok", b"ok")), ["/d/l", "/d/dir", "/d/ok"])
    assert got[0][:2] == ("/d/l", None) and "symbolic link" in got[0][2]
    assert got[1][:2] == ("/d/dir", None) and "directory" in got[1][2]
    assert got[2] == ("/d/ok", b"ok", "")


def test_a_name_twice_is_trusted_for_neither():
    got = answers(tar_of(("/d/a", b"first"), ("/d/a", b"second")), ["/d/a"])
    assert got == [("/d/a", None, "in the archive twice")]


def test_a_truncated_stream_keeps_the_members_read_whole_and_fails_the_rest():
    data = tar_of(("/d/a", b"a" * 1000), ("/d/b", b"b" * 5000), ("/d/c", b"c"))
    cut = data[:512 + 1024 + 512 + 2000]  # /d/a whole, /d/b's header and part of its bytes
    got = answers(cut, ["/d/a", "/d/b", "/d/c"])
    assert got[0] == ("/d/a", b"a" * 1000, "")
    assert got[1][:2] == ("/d/b", None) and got[2][:2] == ("/d/c", None)
    assert "ended early" in got[2][2] or "cut short" in got[1][2]
    assert answers(b"", ["/d/a"])[0][1] is None
    assert answers(b"garbage" * 100, ["/d/a"])[0][1] is None


def test_a_size_that_changed_is_the_callers_to_see():
    """The parser answers the bytes the archive holds; the backup compares their length with the
    size its walk saw (brsm.workflows.backup.copy) and reads a file that differs again alone."""
    got = parse_tar_members(tar_of(("/d/a", b"grown!")), ["/d/a"])
    assert got[0].data == b"grown!"
