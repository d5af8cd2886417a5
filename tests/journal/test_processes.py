"""Real processes: SIGKILLed writers leave a clean, verified prefix; the driver lock holds across processes;
readers are not blocked by a writer's open transaction."""
import os
import random
import signal
import socket
import time

import pytest

from journal import Journal, JournalLocked

from .helper_proc import payload


def parse(text):
    """Only newline-terminated lines count: a line the writer was killed in the middle of says nothing."""
    intents, committed = [], []
    for line in text.split("\n")[:-1]:
        word, _, n = line.partition(" ")
        if word == "intent":
            intents.append(int(n))
        elif word == "committed":
            committed.append(int(n))
    return intents, committed


def test_sigkilled_writer_leaves_a_clean_verified_prefix(jpath, helpers):
    j = Journal.open(jpath)
    op = j.create_operation(kind="backup", who="w@h", version="0.1.0")
    rng = random.Random(0xB5)
    prev_n, rounds_with_progress = 0, 0
    for round_ in range(8):
        p = helpers.start(jpath, op.id, "append", str(rng.randrange(1 << 30)))
        helpers.wait_for(p, "ready")
        time.sleep(rng.uniform(0.02, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        intents, committed = parse(p.stdout.read())

        after = Journal.open(jpath)  # recovery: a fresh process-level open of the file
        report = after.verify()
        assert report.ok, report.problems[:3]
        events = list(after.events(op.id))
        n = len(events)
        assert [e.seq for e in events] == list(range(1, n + 1))
        for e in events:
            assert (e.type, e.data) == payload(e.seq), e.seq
        # durable at return: everything reported committed is there
        assert not committed or n >= committed[-1]
        # all or nothing per batch: the journal ends exactly at a batch boundary
        boundaries = {prev_n} | set(committed) | set(intents[-1:])
        assert n in boundaries, (n, intents[-3:], committed[-3:])
        assert after.operation(op.id).head_seq == n
        rounds_with_progress += n > prev_n
        prev_n = n
        after.close()
    assert rounds_with_progress >= 6
    j.close()


def test_second_driver_in_another_process_is_refused(jpath, journal, new_op, helpers):
    op = new_op()
    p = helpers.start(jpath, op.id, "hold")
    _, pid = helpers.wait_for(p, "locked")
    assert int(pid) == p.pid
    with pytest.raises(JournalLocked) as ei:
        with journal.driver(op.id):
            pass
    assert ei.value.pid == p.pid and ei.value.host == socket.gethostname()
    assert str(p.pid) in str(ei.value) and socket.gethostname() in str(ei.value)
    # other operations are not affected
    with journal.driver(new_op().id) as w:
        w.append("Fine", {})
    # the kernel drops the lock when the holder dies, however it dies
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    with journal.driver(op.id) as w:
        assert w.append("Resumed", {}).seq == 1


def test_another_process_is_refused_while_we_drive(jpath, journal, new_op, helpers):
    op = new_op()
    with journal.driver(op.id):
        p = helpers.start(jpath, op.id, "hold")
        assert p.wait(timeout=30) != 0
        err = p.stderr.read()
        assert "JournalLocked" in err and f"pid {os.getpid()}" in err and socket.gethostname() in err
    p2 = helpers.start(jpath, op.id, "hold")
    helpers.wait_for(p2, "locked")


def test_same_process_twice_is_refused(jpath, journal, new_op):
    op = new_op()
    with journal.driver(op.id):
        with pytest.raises(JournalLocked) as ei:
            with journal.driver(op.id):
                pass
        assert ei.value.pid == os.getpid() and ei.value.host == socket.gethostname()
        second = Journal.open(jpath)  # another Journal object, same process: still refused
        with pytest.raises(JournalLocked):
            with second.driver(op.id):
                pass
        second.close()
    with journal.driver(op.id) as w:  # released on exit
        w.append("Again", {})


def test_lock_is_released_when_the_block_raises(journal, new_op):
    op = new_op()
    with pytest.raises(RuntimeError):
        with journal.driver(op.id):
            raise RuntimeError("step failed")
    with journal.driver(op.id):
        pass


def test_create_operation_needs_no_lock_while_others_drive(jpath, journal, new_op, helpers):
    op = new_op()
    p = helpers.start(jpath, op.id, "hold")
    helpers.wait_for(p, "locked")
    assert journal.create_operation(kind="restore", who="w", version="v").id == op.id + 1


def test_reader_reads_while_a_writer_holds_a_transaction(jpath, journal, new_op, helpers):
    op = new_op()
    with journal.driver(op.id) as w:
        w.append_batch([payload(s) for s in range(1, 101)])
    p = helpers.start(jpath, op.id, "open-txn")
    helpers.wait_for(p, "in-transaction")  # event 101 written but not committed; write lock held

    reader = Journal.open(jpath)
    t0 = time.monotonic()
    events = list(reader.events(op.id))
    assert [e.seq for e in events] == list(range(1, 101))  # committed state only
    assert reader.count_events(op.id) == 100
    assert reader.verify().ok  # the uncommitted head change is invisible too
    assert [o.id for o in reader.operations()] == [op.id]
    assert time.monotonic() - t0 < 2.0  # not waiting for the writer's lock
    reader.close()

    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    after = Journal.open(jpath)
    assert after.count_events(op.id) == 100 and after.verify().ok
    with after.driver(op.id) as w:
        assert w.append(*payload(101)).seq == 101
    after.close()


def test_two_processes_append_to_different_operations_at_once(jpath, journal, new_op, helpers):
    ops = [new_op(), new_op()]
    procs = [helpers.start(jpath, op.id, "append", str(i)) for i, op in enumerate(ops)]
    for p in procs:
        helpers.wait_for(p, "ready")
    time.sleep(0.5)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        assert "Error" not in p.stderr.read()
    assert journal.verify().ok
    for op in ops:
        events = list(journal.events(op.id))
        assert len(events) > 0
        assert all((e.type, e.data) == payload(e.seq) for e in events)
