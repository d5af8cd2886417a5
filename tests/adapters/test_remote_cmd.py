"""The argv builders are pure: checked here without any SSH."""
import shlex

import pytest

from brsm.adapters import remote_cmd as rc, remote_scripts
from brsm.errors import RemoteError
from brsm.ports import DaemonProbe


def test_service_argv():
    assert rc.service_argv("/usr/local/nebula", "start", "metad") == (
        "/usr/local/nebula/scripts/nebula.service", "start", "metad")
    assert rc.service_argv("/opt/my nebula/", "status", "storaged")[0] == "/opt/my nebula/scripts/nebula.service"
    with pytest.raises(ValueError):
        rc.service_argv("/usr/local/nebula", "start; rm -rf /", "metad")
    with pytest.raises(ValueError):
        rc.service_argv("/usr/local/nebula", "start", "sshd")
    with pytest.raises(RemoteError):
        rc.service_argv("relative/dir", "start", "metad")


@pytest.mark.parametrize("bad", ["", "/", "//", "/./", "/a/..", "relative", "./x", "/a/../..", "a/b", "/x\0y"])
def test_destructive_builders_refuse_bad_paths(bad):
    for fn in (rc.rm_rf_argv, rc.make_dir_argv, rc.find_files_argv, rc.df_argv):
        with pytest.raises(RemoteError):
            fn(bad)
    with pytest.raises(RemoteError):
        rc.mv_argv(bad, "/tmp/x")
    with pytest.raises(RemoteError):
        rc.mv_argv("/tmp/x", bad)


def test_rm_rf_argv_normalises_and_ends_options():
    assert rc.rm_rf_argv("/data/nebula/") == ("rm", "-rf", "--one-file-system", "--", "/data/nebula")
    assert rc.rm_rf_argv("/data//x/./y") [-1] == "/data/x/y"
    assert rc.rm_rf_argv("/-rf")[-2:] == ("--", "/-rf")


def test_mv_mkdir_find_df():
    assert rc.mv_argv("/a/b", "/a/c") == ("mv", "-T", "--", "/a/b", "/a/c")
    assert rc.make_dir_argv("/a b/c") == ("mkdir", "--", "/a b/c")
    argv = rc.find_files_argv("/data")
    assert argv[:4] == ("find", "/data", "-type", "f") and argv[-1] == "%s %p\\0"
    assert rc.df_argv("/data")[-1] == "/data"


def test_rendering_quotes_everything():
    argv = rc.mv_argv("/a/it's $(rm -rf /)", "/a/b c")
    assert shlex.split(shlex.join(argv)) == list(argv)


def test_parsers():
    assert rc.parse_df("Avail\n12345\n") == 12345
    out = b"3 /d/a b\x0010 /d/x\ny\x000 /d/empty\x00"
    assert rc.parse_find_files(out) == [("/d/a b", 3), ("/d/x\ny", 10), ("/d/empty", 0)]
    assert rc.parse_find_files(b"") == []


def test_parse_lstat_dir_trusts_only_root_owned_links_above_the_dir():
    from brsm.adapters import remote_cmd as rc, remote_scripts

    root_link = "1000\n0 1 2 symbolic link\n1000 1 3 directory\n"
    assert rc.parse_lstat_dir(root_link, "/d/x").identity == (1, 3)
    with pytest.raises(ValueError, match="/d is a symbolic link not owned by root"):
        rc.parse_lstat_dir("1000\n1000 1 2 symbolic link\n1000 1 3 directory\n", "/d/x")
    with pytest.raises(ValueError, match="/d/x is a fifo"):
        rc.parse_lstat_dir("1000\n0 1 2 directory\n1000 1 3 fifo\n", "/d/x")
    got = rc.parse_lstat_dir("1000\n0 1 2 directory\n0 1 3 directory\nentry\n", "/d/x")
    assert not got.mine and not got.empty
    assert rc.lstat_dir_argv("/d/a b")[3:] == ("brsm-lstat", "/d", "/d/a b")


def test_the_host_check_keeps_every_value_out_of_its_script():
    hostile = "a'b; rm -rf /"
    argv = remote_scripts.host_check_argv([DaemonProbe("storaged", "/opt/x y", hostile, 9779)], ["/data/$(reboot)"])
    assert argv[:2] == ("bash", "-c") and hostile not in argv[2] and "$(reboot)" not in argv[2]
    assert argv[3:9] == ("brsm-host-check", "1", "storaged", "/opt/x y", hostile, "9779")  # arguments, never code
    assert "/data/$(reboot)" in argv[9:]


def test_the_fingerprint_keeps_its_dirs_out_of_its_script():
    argv = remote_scripts.fingerprint_argv(["/d/$(reboot)", "/e f"], 2)
    assert argv[:2] == ("bash", "-c") and "$(reboot)" not in argv[2] and argv[3:] == ("brsm-fingerprint",
                                                                                      "/d/$(reboot)", "/e f")
    with pytest.raises(ValueError):
        remote_scripts.fingerprint_argv(["/d"], 3)


def test_doctests():
    import doctest

    assert doctest.testmod(rc).failed == 0 and doctest.testmod(remote_scripts).failed == 0
