"""Leadership: kopf's peering pause, found where kopf 1.45 keeps it, and read as
"this replica leads" only once kopf has read its peering object.

If kopf stops handing its pause to its root tasks as ``operator_paused``, the first
test fails (and the operator refuses to start under peering rather than write beside
the leader). That the peering toggle's name is ``<peering>@<namespace>`` is shown by
the operator tier: two replicas under real peering, one leads
(tests/operator/test_operator_replicas.py).
"""

from __future__ import annotations

import asyncio

import kopf
import pytest
from kopf._cogs.aiokits.aiotoggles import ToggleSet

from kipsec_operator.leadership import KopfChanged, Leadership, kopf_pause
from kipsec_operator.main import PEERING_NAME, settings


def test_kopfs_pause_is_found_among_the_tasks_kopf_spawns() -> None:
    async def main() -> None:
        stop = asyncio.Event()
        tasks = await kopf.spawn_tasks(
            registry=kopf.OperatorRegistry(),
            settings=settings(standalone=False),
            clusterwide=True,
            stop_flag=stop,
        )
        try:
            pause = kopf_pause(tasks)
            assert isinstance(pause, ToggleSet)
            assert pause.is_off()  # nothing read yet: not a verdict (below)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def test_tasks_without_a_pause_are_refused() -> None:
    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(10))
        with pytest.raises(KopfChanged, match="operator_paused"):
            kopf_pause([task])
        task.cancel()

    asyncio.run(main())


def test_unknown_is_not_active_and_standalone_is() -> None:
    async def main() -> None:
        leadership = Leadership()
        assert not leadership.active
        leadership.follow(None)
        assert leadership.active
        await asyncio.wait_for(leadership.until_active(), 1)

    asyncio.run(main())


def test_an_undecided_pause_is_not_leadership_and_the_peering_verdict_is() -> None:
    async def main() -> None:
        pause = ToggleSet(any)
        await pause.make_toggle(False, name="peering CRD is missing")
        leadership = Leadership()
        leadership.POLL_SECONDS = 0.01
        leadership.follow(pause, PEERING_NAME)
        waiting = asyncio.ensure_future(leadership.until_active())
        await asyncio.sleep(0.05)
        assert not leadership.active and not waiting.done()  # kopf has not read its peering

        peering = await pause.make_toggle(True, name=f"{PEERING_NAME}@None")
        await asyncio.sleep(0.05)
        assert not leadership.active and not waiting.done()  # a peer outranks it

        await peering.turn_to(False)
        await asyncio.wait_for(waiting, 1)
        assert leadership.active

        paused = asyncio.ensure_future(leadership.until_paused())
        await asyncio.sleep(0.02)
        assert not paused.done()
        await peering.turn_to(True)
        await asyncio.wait_for(paused, 1)
        assert not leadership.active

    asyncio.run(main())
