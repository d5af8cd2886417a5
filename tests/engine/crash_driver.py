"""Run the toy workflow in a subprocess so a failpoint's crash (os._exit) really kills a process.

usage: python crash_driver.py JOURNAL WORLD_JSON (run|resume|rollback) [OP_ID]
Prints the operation id on stdout first.
"""
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from journal import Journal  # noqa: E402

from brsm.engine.runner import Runner  # noqa: E402
from tests.engine.toy import World, make_workflow  # noqa: E402


async def main() -> None:
    jpath, wpath, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    j = Journal.open(jpath)
    world = World(path=wpath).load()
    runner = Runner(j, make_workflow(world))
    if mode == "run":
        op_id = runner.create({"storage": "toy://"}, target="toy://")
    else:
        op_id = int(sys.argv[4])
    print(op_id, flush=True)
    if mode == "rollback":
        await runner.rollback(op_id)
    else:
        await runner.run(op_id)


asyncio.run(main())
