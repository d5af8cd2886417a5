"""brsm.workflows.services: reading nebula.service the way it behaves (scripts/nebula.service and
scripts/utils.sh of vesoft-inc/nebula), and start/stop over every host at once with bounded waits."""
from __future__ import annotations

import doctest

import pytest

from brsm.errors import OperationFailed
from brsm.fakes import FakeCluster, FakeHosts
from brsm.fakes.cluster import CLUSTER_ID_FILE, encode_cluster_id
from brsm.workflows import services
from brsm.workflows.services import ServiceStatus, ServiceTarget, already_running, parse_status

# What the real script prints (status_daemon, start_daemon, stop_daemon): no tty, so no colours.
REAL_STATUS_ALL = """\
[WARN] The maximum files allowed to open might be too few: 1024
[INFO] nebula-metad(5d43e44): Running as 31337, Listening on 9559
[INFO] nebula-graphd(5d43e44): Exited
[WARN] nebula-storaged after v3.0.0 will not start service until it is added to cluster.
[WARN] See Manage Storage hosts:ADD HOSTS in https://docs.nebula-graph.io/
[INFO] nebula-storaged(5d43e44): Running as 31338, Listening on 9779
"""
# On a terminal it colours words: GREEN=\001\033[1;32m\002 ... NC=\001\033[0m\002 (utils.sh).
G, R, BL, NC = "\x01\x1b[1;32m\x02", "\x01\x1b[1;31m\x02", "\x01\x1b[5m\x02", "\x01\x1b[0m\x02"
COLOURED = f"{G}[INFO]{NC} nebula-storaged(5d43e44): Running as 12, Listening on {BL}{R}9779{NC}\n"


def test_parse_status_reads_every_daemon_and_skips_other_lines():
    assert parse_status(REAL_STATUS_ALL) == {
        "metad": ServiceStatus("metad", True, 31337, 9559, "5d43e44"),
        "graphd": ServiceStatus("graphd", False, version="5d43e44"),
        "storaged": ServiceStatus("storaged", True, 31338, 9779, "5d43e44"),
    }


def test_parse_status_without_colours_and_of_other_versions():
    assert parse_status(COLOURED)["storaged"] == ServiceStatus("storaged", True, 12, 9779, "5d43e44")
    assert parse_status("[INFO] nebula-metad(sandbox): Exited\n") == {
        "metad": ServiceStatus("metad", False, version="sandbox")}
    assert parse_status("[INFO] nebula-metad(): Running as 1, Listening on 9559")["metad"].running


def test_parse_status_of_nothing_useful():
    assert parse_status("") == {}
    assert parse_status("[ERROR] /usr/local/nebula/etc/nebula-metad.conf not found\n") == {}
    assert parse_status("Usage: nebula.service [-v] <start|stop|restart|status|kill> <metad|graphd|storaged|all>") == {}


def test_already_running():
    text = "[ERROR] nebula-metad already running: 4242\n"
    assert already_running(text, "metad") == 4242
    assert already_running(text, "storaged") is None
    assert already_running(f"{R}[ERROR]{NC} nebula-storaged already running: 7\n", "storaged") == 7
    assert already_running("[INFO] Starting nebula-metad...\n[INFO] Done\n", "metad") is None


def test_a_status_line_without_a_pid_is_a_daemon_on_its_way_out_not_silence():
    """nebula.service's status_daemon (vesoft-inc/nebula scripts/nebula.service) checks the pid file, then prints it again:
    a daemon exiting in between leaves "Running as , Listening on 9779". It was read as "status said
    nothing" and failed the stop step once sessions got fast enough to poll inside that window."""
    st = parse_status("[INFO] nebula-storaged(sandbox): Running as , Listening on 9779\n")["storaged"]
    assert st.running and st.pid is None and st.port == 9779


def test_doctests():
    assert doctest.testmod(services).failed == 0


# -- start/stop over the fake's nebula.service ------------------------------------------------------
@pytest.fixture
def c():
    return FakeCluster(metas=1, storages=3, service_lag=2)


def storages(c) -> list[ServiceTarget]:
    return [ServiceTarget(a.host, c.install_dir, a.port) for a in c.storage_addrs]


async def test_stop_waits_until_gone_and_port_closed_on_every_host(c):
    hosts = FakeHosts(c)
    await services.stop(hosts, "storaged", storages(c))
    assert not any(c.service_up(a.host, "storaged") for a in c.storage_addrs)
    # nothing running: a second stop is done at once
    await services.stop(hosts, "storaged", storages(c))


async def test_start_of_a_running_daemon_is_done_and_start_waits_for_the_port(c):
    hosts = FakeHosts(c)
    await services.start(hosts, "storaged", storages(c))  # all run: "already running" (exit 1) is fine
    await services.stop(hosts, "storaged", storages(c))
    await services.start(hosts, "storaged", storages(c))
    assert all(c.service_listening(a.host, "storaged") for a in c.storage_addrs)


async def test_a_storaged_refused_by_metad_fails_the_start_naming_its_host(c):
    hosts = FakeHosts(c)
    await services.stop(hosts, "storaged", storages(c))
    bad = c.storage_addrs[2].host
    c.machine(bad).put(f"{c.install_dir}/{CLUSTER_ID_FILE}", encode_cluster_id(c.cluster_id + 1))
    with pytest.raises(OperationFailed) as ei:
        await services.start(hosts, "storaged", storages(c), timeout=2)
    msg = ei.value.message
    assert msg.startswith("storaged did not start on 1 of 3 host(s):") and bad in msg
    assert "not listening on port 9779" in msg and "cluster.id" in ei.value.hint
    assert all(c.service_listening(a.host, "storaged") for a in c.storage_addrs[:2])  # the others came up


async def test_a_failing_script_names_the_host_and_what_it_said(c):
    hosts = FakeHosts(c)
    h = c.storage_addrs[0].host
    c.faults.add("verb_fail", h, verb="service", exit=2,
                 stderr="[ERROR] /usr/local/nebula/bin/nebula-storaged not found")
    with pytest.raises(OperationFailed, match=f"{h}: `nebula.service stop storaged` exited with status 2: "
                                              r"\[ERROR\] .*nebula-storaged not found"):
        await services.stop(hosts, "storaged", storages(c))


async def test_a_daemon_that_exits_after_start_fails_before_the_timeout(c, monkeypatch):
    monkeypatch.setattr(services, "EXITED_GRACE", 0.5)
    hosts = FakeHosts(c)
    target = [ServiceTarget(c.leader.host, c.install_dir, 9669)]
    await services.stop(hosts, "graphd", target)
    real_start = c.start_service

    def dies(host, svc):  # forks, then the daemon dies (a bad flag, a port in use, ...)
        out = real_start(host, svc)
        c.machine(host).running[svc] = False
        return out

    c.start_service = dies
    with pytest.raises(OperationFailed, match="graphd exited after it was started"):
        await services.start(hosts, "graphd", target, timeout=60)
