"""Failures are values: handler exceptions reach the caller typed; errors cross the wire."""

import asyncio
import traceback

import msgspec
import pytest

import rio
from rio.core.errors import RioError, error_from_wire, error_to_wire

from .helpers import Probe, is_active, probe


class TeInsufficientFunds(Exception):
    pass


class TeBank(rio.Actor):
    def __init__(self) -> None:
        self.balance = 10

    async def withdraw_now(self, amount: int) -> int:
        if amount > self.balance:
            raise TeInsufficientFunds(f"balance {self.balance} < {amount}")  # the raising line
        self.balance -= amount
        return self.balance

    async def withdraw_later(self, amount: int) -> int:
        await asyncio.sleep(0)
        return await self.withdraw_now(amount)

    async def fail_value(self) -> None:
        raise ValueError("bad value 7")

    async def balance_of(self) -> int:
        return self.balance

    async def hold(self) -> None:
        await probe().gate("hold")


class TeCaller(rio.Actor):
    async def bad_args(self) -> int:
        return await TeBank.ref("nested").withdraw_now("lots")

    async def remote_failure(self) -> None:
        await TeBank.ref("nested").fail_value()

    async def unknown_type(self) -> None:
        await self.system.ref("TeNoSuchType", "x").anything()

    async def nested_timeout(self) -> None:
        await TeBank.ref("slow").with_timeout(0.02).hold()

    async def catch_and_report(self) -> str:
        try:
            await TeBank.ref("nested").fail_value()
        except rio.RemoteError as e:
            return f"{e.remote_type}: {e.remote_message}"
        return "no error"


@pytest.mark.parametrize("method", ["withdraw_now", "withdraw_later"])
async def test_handler_exception_becomes_remote_error(system: rio.System, method: str) -> None:
    ref = TeBank.ref(f"b-{method}")
    with pytest.raises(rio.RemoteError) as info:
        await getattr(ref, method)(100)
    err = info.value
    assert err.remote_type == f"{__name__}.TeInsufficientFunds"
    assert err.remote_message == "balance 10 < 100"
    assert str(err) == f"{__name__}.TeInsufficientFunds: balance 10 < 100"
    assert "Traceback (most recent call last)" in err.remote_traceback
    assert "raise TeInsufficientFunds(" in err.remote_traceback
    assert "# the raising line" in err.remote_traceback
    assert "test_errors.py" in err.remote_traceback
    assert err.is_a(TeInsufficientFunds)
    assert not err.is_a(ValueError)
    assert isinstance(err, rio.RioError)


async def test_builtin_exceptions_have_short_names(system: rio.System) -> None:
    with pytest.raises(rio.RemoteError) as info:
        await TeBank.ref("v").fail_value()
    assert info.value.remote_type == "ValueError"
    assert info.value.is_a(ValueError)
    assert not info.value.is_a(TypeError)
    assert str(info.value) == "ValueError: bad value 7"


async def test_the_activation_keeps_serving_after_an_exception(system: rio.System) -> None:
    ref = TeBank.ref("keeps")
    assert await ref.withdraw_now(3) == 7
    for method in (ref.withdraw_now, ref.withdraw_later):
        with pytest.raises(rio.RemoteError):
            await method(100)
    assert await is_active(system, TeBank, "keeps")
    assert await ref.withdraw_now(2) == 5  # same activation, same in-memory state


async def test_exception_in_a_queued_turn(system: rio.System, probe: Probe) -> None:
    ref = TeBank.ref("queued")
    held = ref.hold()
    failing = ref.withdraw_now(100)
    after = ref.withdraw_now(1)
    probe.open("hold")
    await held
    with pytest.raises(rio.RemoteError, match="balance 10 < 100"):
        await failing
    assert await after == 9


async def test_rio_errors_from_nested_calls_propagate_as_themselves(system: rio.System) -> None:
    caller = TeCaller.ref("c")
    with pytest.raises(rio.BadArguments, match="argument 'amount': Expected `int`, got `str`"):
        await caller.bad_args()
    with pytest.raises(rio.UnknownActorType, match="TeNoSuchType"):
        await caller.unknown_type()
    with pytest.raises(rio.CallTimeout, match=r"TeBank/slow\.hold\(\)"):
        await caller.nested_timeout()
    probe().open("hold")


async def test_remote_errors_from_nested_calls_are_not_wrapped_twice(system: rio.System) -> None:
    with pytest.raises(rio.RemoteError) as info:
        await TeCaller.ref("c").remote_failure()
    assert info.value.remote_type == "ValueError"
    assert info.value.remote_message == "bad value 7"
    assert "fail_value" in info.value.remote_traceback


async def test_handlers_can_catch_remote_errors(system: rio.System) -> None:
    assert await TeCaller.ref("c").catch_and_report() == "ValueError: bad value 7"


# -- errors on the wire ------------------------------------------------------------------


def _all_rio_errors() -> list[type[RioError]]:
    found: list[type[RioError]] = []
    todo: list[type[RioError]] = [RioError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == "rio"]  # the public ones (see errors.py)


def test_every_public_error_is_covered() -> None:
    public = {name for name in rio.__all__ if isinstance(getattr(rio, name), type)}
    errors = {c.__name__ for c in _all_rio_errors()}
    assert errors - {"RioError"} <= public
    assert len(errors) == 21  # RioError and its 20 subclasses


def _example(cls: type[RioError]) -> RioError:
    if cls is rio.RemoteError:
        return rio.RemoteError("bank.InsufficientFunds", "balance 1 < 5", "Traceback ...\n")
    if cls is rio.Deadlock:
        return rio.Deadlock("cycle A/a -> B/b -> A/a", ["A/a", "B/b", "A/a"])
    return cls(f"something about {cls.__name__}")


@pytest.mark.parametrize(
    "cls", [c for c in _all_rio_errors() if c is not RioError], ids=lambda c: c.__name__
)
def test_error_round_trips_through_msgpack(cls: type[RioError]) -> None:
    original = _example(cls)
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(error_to_wire(original)))
    back = error_from_wire(wire)
    assert type(back) is cls
    assert str(back) == str(original)
    assert back.message == original.message
    if isinstance(original, rio.RemoteError):
        assert isinstance(back, rio.RemoteError)
        assert back.remote_type == original.remote_type
        assert back.remote_message == original.remote_message
        assert back.remote_traceback == original.remote_traceback
    if isinstance(original, rio.Deadlock):
        assert isinstance(back, rio.Deadlock)
        assert back.chain == ["A/a", "B/b", "A/a"]


def test_the_base_error_round_trips() -> None:
    back = error_from_wire(error_to_wire(RioError("plain")))
    assert type(back) is RioError
    assert back.message == "plain"


def test_other_exceptions_go_on_the_wire_as_remote_errors() -> None:
    back = error_from_wire(error_to_wire(KeyError("k")))
    assert isinstance(back, rio.RemoteError)
    assert back.remote_type == "KeyError"
    assert back.remote_message == "'k'"
    assert back.is_a(KeyError)


def test_unknown_or_malformed_wire_errors_become_remote_errors() -> None:
    back = error_from_wire({"kind": "SomethingNew", "args": ["what happened"]})
    assert isinstance(back, rio.RemoteError)
    assert back.remote_type == "SomethingNew"
    assert back.remote_message == "what happened"
    odd = error_from_wire({"kind": "Deadlock", "args": [1, 2, 3, 4]})
    assert isinstance(odd, rio.RemoteError)
    assert isinstance(error_from_wire({}), rio.RemoteError)


def test_remote_error_to_wire_keeps_the_traceback() -> None:
    err = rio.RemoteError("x.Y", "msg", "tb text")
    assert error_to_wire(err) == {"kind": "RemoteError", "args": ["x.Y", "msg", "tb text"]}


def test_error_message_property() -> None:
    assert rio.ConfigError("bad").message == "bad"
    assert RioError().message == ""
    assert rio.Deadlock("cycle", ["A/a"]).message == "cycle"
    assert str(rio.Deadlock("cycle", ["A/a"])) == "cycle"


def test_an_error_from_another_process_shows_where_it_was_raised() -> None:
    def handler_code() -> None:
        raise ValueError("amount 50 over the limit")

    try:
        handler_code()
    except ValueError as e:
        wrapped = rio.RemoteError("ValueError", str(e), "".join(traceback.format_exception(e)))
        wrapped.__cause__ = e  # as the runtime wraps a handler's exception
    # Across a process boundary: the wrapper and its cause arrive as one error whose
    # cause prints the handler's frames (as concurrent.futures shows a worker's).
    def hop(err: BaseException) -> RioError:
        return error_from_wire(msgspec.msgpack.decode(msgspec.msgpack.encode(error_to_wire(err))))

    for back in (hop(wrapped), hop(hop(wrapped))):  # a worker to a node to a client, too
        assert isinstance(back, rio.RemoteError)
        printed = "".join(traceback.format_exception(back))
        assert printed.count("ValueError: amount 50 over the limit") == 2  # the cause, then it
        assert "in handler_code" in printed
        assert 'raise ValueError("amount 50 over the limit")' in printed


def test_errors_print_as_users_write_them() -> None:
    line = traceback.format_exception_only(rio.BadArguments("x"))[-1]
    assert line == "rio.BadArguments: x\n"
    for name in ("RioError", "StateEncodeError", "WorkerLost", "RemoteError"):
        assert getattr(rio, name).__module__ == "rio"
