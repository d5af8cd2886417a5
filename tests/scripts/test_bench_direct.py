"""scripts/bench_direct.py reads the bytes of every TCP connection from `ss -tinpH`: its parser, on
the lines ss prints (two per socket, the second indented), pure."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_direct  # noqa: E402

SS = """\
ESTAB 0      0      127.0.0.1:60981 127.0.0.1:52244 users:(("python3",pid=15790,fd=5))
\t bbr wscale:10,10 rto:204 rtt:0.031/0.015 ato:40 mss:32768 bytes_received:100000 segs_out:2 segs_in:5
ESTAB 0      0      127.0.0.1:52244 127.0.0.1:60981 users:(("python3",pid=15790,fd=4),("sshd",pid=7,fd=3))
\t bbr wscale:10,10 rto:204 rtt:0.04/0.016 mss:47616 bytes_sent:100000 bytes_acked:100001 bytes_received:17
FIN-WAIT-1 0   0      127.0.0.5:22 127.0.0.1:40000
\t cubic bytes_sent:5 bytes_acked:6
"""


def test_parse_ss_reads_each_socket_with_its_pids_and_bytes():
    got = bench_direct.parse_ss(SS)
    assert got == [("127.0.0.1:60981", "127.0.0.1:52244", {15790}, 0, 100000),
                   ("127.0.0.1:52244", "127.0.0.1:60981", {15790, 7}, 100000, 17),
                   ("127.0.0.5:22", "127.0.0.1:40000", set(), 5, 0)]


def test_the_watch_keeps_each_connections_highest_count():
    w = bench_direct.SocketWatch({"127.0.0.5:22"})
    w.pid = 15790
    for sent, recv in ((10, 5), (30, 7), (20, 9)):  # a later poll can only grow, but ss may race
        w._take(w.brsm, ("a", "b"), sent, recv)
    assert w.total(w.brsm) == (30, 9, 1)
