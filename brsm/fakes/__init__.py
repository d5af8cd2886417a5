"""In-process, deterministic fakes of the meta and hosts ports, for property tests of workflows.

    cluster = FakeCluster(metas=1, storages=3, data_paths=2)
    cluster.add_space("basketball")
    meta, hosts = FakeMeta(cluster), FakeHosts(cluster)
    cluster.faults.add("meta_code", "createBackup", code=-24, after_hosts=1)

Used by tests only; workflows never import this package (they get ports handed in).
"""
from brsm.fakes.cluster import FakeCluster
from brsm.fakes.faults import Fault, Faults
from brsm.fakes.machine import Machine
from brsm.fakes.hosts import FakeHost, FakeHosts
from brsm.fakes.meta import FakeMeta

__all__ = ["FakeCluster", "FakeHost", "FakeHosts", "FakeMeta", "Fault", "Faults", "Machine"]
