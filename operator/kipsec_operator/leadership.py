"""Whether this replica leads: kopf's peering pause, read where kopf keeps it.

Two replicas run with kopf peering; kopf pauses every replica but the one with the
highest priority. kopf's watches, handlers and timers stop while it is paused, but the
operator's own watches (:mod:`.index_watches`) run in every replica, so its reconcile
passes, and anything else that writes, ask :class:`Leadership` first.

kopf 1.45 exposes no public hook for its pause: :func:`kopf.spawn_tasks` (public)
creates it as a local ``ToggleSet`` named ``operator_paused`` and hands it to its root
tasks as an argument, and the peering observer adds one toggle per peering object
(named ``<peering name>@<namespace>``), on until it has read that object and found no
peer with a higher or equal priority. :func:`kopf_pause` finds that set in the tasks
``spawn_tasks`` returned; it is the one place this module (and the operator) touches
kopf's internals, and ``tests/unit/test_operator_leadership.py`` fails if kopf changes
them. A replica counts as active only once that peering toggle exists and the set is
off: before kopf has read its peering object the set is empty, hence off, and a
replica that trusted it would write beside the leader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any, Protocol

PAUSE_ARGUMENT = "operator_paused"
"""The name of the argument kopf's root coroutines take the pause as."""


class KopfChanged(RuntimeError):
    """kopf no longer keeps its pause where :func:`kopf_pause` looks for it."""


class PauseSet(Protocol):
    """What is read of kopf's ``aiotoggles.ToggleSet`` (each toggle: ``name``, ``is_on``)."""

    def __iter__(self) -> Any: ...

    def is_on(self) -> bool: ...

    async def wait_for(self, state: bool, /) -> None: ...


class Leadership:
    """This replica's role: always active when standalone, else as kopf's peering says.

    Unknown (not active) until :meth:`follow` is called, which :func:`.main.run_operator`
    does right after kopf spawned its tasks."""

    POLL_SECONDS = 0.1
    """How often :meth:`until_active` looks again while kopf has not read its peering."""

    def __init__(self) -> None:
        self._pause: PauseSet | None = None
        self._peering = ""
        self._known = asyncio.Event()

    def follow(self, pause: PauseSet | None, peering: str = "") -> None:
        """Follow kopf's `pause` for the peering object `peering`; None: standalone."""
        self._pause, self._peering = pause, peering
        self._known.set()

    @property
    def active(self) -> bool:
        """Whether this replica may write now."""
        if not self._known.is_set():
            return False
        pause = self._pause
        return pause is None or (self._decided(pause) and not pause.is_on())

    def _decided(self, pause: PauseSet) -> bool:
        prefix = f"{self._peering}@"
        return any(str(toggle.name or "").startswith(prefix) for toggle in pause)

    async def until_active(self) -> None:
        """Return once this replica leads (at once when standalone)."""
        await self._known.wait()
        pause = self._pause
        if pause is None:
            return
        while True:
            await pause.wait_for(False)
            if self.active:
                return
            await asyncio.sleep(self.POLL_SECONDS)  # kopf has not read its peering yet

    async def until_paused(self) -> None:
        """Return once this replica stops leading (never when standalone)."""
        await self._known.wait()
        pause = self._pause
        if pause is None:
            await asyncio.Event().wait()
            return
        await pause.wait_for(True)


def kopf_pause(tasks: Collection[asyncio.Task[Any]]) -> PauseSet:
    """kopf's pause, found among the arguments of the root tasks :func:`kopf.spawn_tasks`
    returned (each task runs kopf's guard around the root coroutine, ``coro``)."""
    found: dict[int, PauseSet] = {}
    for task in tasks:
        coro: Any = task.get_coro()
        for _ in range(3):  # the task's coroutine, the one it guards
            frame = getattr(coro, "cr_frame", None)
            if frame is None:
                break
            arguments = frame.f_locals
            pause = arguments.get(PAUSE_ARGUMENT)
            if pause is not None and hasattr(pause, "wait_for") and hasattr(pause, "is_on"):
                found[id(pause)] = pause
            coro = arguments.get("coro")
    if len(found) != 1:
        raise KopfChanged(
            f"kopf's root tasks hold {len(found)} '{PAUSE_ARGUMENT}' sets, not one: "
            "the operator cannot tell whether it leads (kopf changed?)"
        )
    return next(iter(found.values()))


__all__ = ["KopfChanged", "Leadership", "PauseSet", "kopf_pause"]
