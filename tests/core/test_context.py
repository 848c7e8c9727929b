"""A turn's context is its own: handlers may use contextvars as in any asyncio task."""

import asyncio
import contextvars

import pytest

import rio

from .helpers import Probe, probe

USER_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("tc_user_var", default="unset")

class TcCtx(rio.Actor):
    async def scoped(self) -> str:
        token = USER_VAR.set("inside")
        try:
            await asyncio.sleep(0)
            return USER_VAR.get()
        finally:
            USER_VAR.reset(token)

    async def set_and_return(self) -> str:
        USER_VAR.set("leaked")
        return "done"

    async def set_and_suspend(self) -> str:
        USER_VAR.set("leaked")
        await asyncio.sleep(0)
        return "done"

    async def hold(self) -> None:
        await probe().gate("hold")

    async def current(self) -> bool:
        # The system of the process hosting this activation (a worker's, on a pool).
        system = rio.current_system()
        return isinstance(system, rio.System) and system is self.system


async def test_a_handler_can_set_and_reset_a_contextvar_across_an_await(
    system: rio.System,
) -> None:
    assert await TcCtx.ref("a").scoped() == "inside"


@pytest.mark.parametrize("method", ["set_and_return", "set_and_suspend"])
async def test_contextvars_set_by_a_handler_do_not_leak_into_the_caller(
    system: rio.System, method: str
) -> None:
    assert await getattr(TcCtx.ref("b"), method)() == "done"
    assert USER_VAR.get() == "unset"


async def test_scoped_contextvar_in_a_queued_turn(system: rio.System, probe: Probe) -> None:
    ref = TcCtx.ref("c")
    held = ref.hold()
    queued = ref.scoped()  # the object is busy: this turn runs from its mailbox
    probe.open("hold")
    await held
    assert await queued == "inside"
    assert USER_VAR.get() == "unset"


async def test_current_system_inside_a_handler(system: rio.System) -> None:
    assert await TcCtx.ref("d").current() is True
