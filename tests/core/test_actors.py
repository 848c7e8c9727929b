"""Defining actors, addressing them with refs, and calling them."""

import msgspec
import pytest

import rio

from .helpers import is_active


class TaCounterState(msgspec.Struct):
    value: int = 0


class TaCounter(rio.Actor[TaCounterState]):
    async def incr(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value

    async def get(self) -> int:
        return self.state.value

    async def whoami(self) -> str:
        return f"{type(self).__name__}/{self.id}"

    def helper(self) -> int:  # not async: not a handler
        return 1

    async def _private(self) -> None:
        pass


class TaStateless(rio.Actor):
    async def echo(self, x: str) -> str:
        return x


class TaRenamed(rio.Actor, name="ta-renamed"):
    async def hello(self) -> str:
        return f"hello from {self.id}"


class TaForwarder(rio.Actor):
    """Calls another object from its handler."""

    async def bump(self, counter_id: str, times: int) -> list[int]:
        return [await TaCounter.ref(counter_id).incr() for _ in range(times)]

    async def via_system(self, counter_id: str) -> int:
        return await self.system.ref("TaCounter", counter_id).incr(10)


class TaBase(rio.Actor[TaCounterState]):
    async def base_handler(self) -> str:
        return "base"


class TaChild(TaBase):
    async def child_handler(self) -> int:
        return self.state.value


async def test_first_call_activates_and_state_lives_in_memory(system: rio.System) -> None:
    ref = TaCounter.ref("a")
    assert await ref.incr(2) == 2
    assert await ref.incr() == 3
    assert await ref.get() == 3
    assert await is_active(system, TaCounter, "a")


async def test_objects_are_independent_per_id(system: rio.System) -> None:
    await TaCounter.ref("x").incr(5)
    assert await TaCounter.ref("y").get() == 0
    assert await TaCounter.ref("x").get() == 5


async def test_three_ways_to_make_a_ref_reach_the_same_object(system: rio.System) -> None:
    await TaCounter.ref("same").incr(1)
    await system.ref(TaCounter, "same").incr(1)
    assert await system.ref("TaCounter", "same").incr(1) == 3


async def test_int_ids_are_strings(system: rio.System) -> None:
    ref = TaCounter.ref(7)
    assert ref.id == "7"
    assert ref == TaCounter.ref("7")
    await ref.incr(1)
    assert await TaCounter.ref("7").get() == 1
    assert await ref.whoami() == "TaCounter/7"


@pytest.mark.parametrize("bad_id", [1.5, None, b"a", True, ("a",)])
def test_ids_other_than_str_or_int_are_refused(bad_id: object) -> None:
    with pytest.raises(rio.BadArguments, match="actor ids are str \\(or int\\)"):
        TaCounter.ref(bad_id)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad_id", "problem"),
    [("a\x00b", "contains a NUL character"), ("x\ud800", "not valid Unicode text")],
)
def test_ids_no_storage_engine_can_keep_are_refused(bad_id: str, problem: str) -> None:
    # Every engine stores keys as UTF-8 text (PostgreSQL refuses NUL): refused at the
    # ref, the same on every engine, rather than as a driver error on the first save.
    with pytest.raises(
        rio.BadArguments, match=f"actor id .* of TaCounter is not allowed: .*{problem}"
    ):
        TaCounter.ref(bad_id)
    assert TaCounter.ref("naïve ☃").id == "naïve ☃"


def test_refs_are_values() -> None:
    a = TaCounter.ref("a")
    assert a == TaCounter.ref("a")
    assert hash(a) == hash(TaCounter.ref("a"))
    assert a != TaCounter.ref("b")
    assert a != TaStateless.ref("a")
    assert a != ("TaCounter", "a")
    assert a.with_timeout(1.0) == a
    assert {a, TaCounter.ref("a"), TaCounter.ref("b")} == {a, TaCounter.ref("b")}
    assert repr(a) == "Ref(TaCounter/a)"
    assert a.id == "a"
    assert a.type_name == "TaCounter"
    assert isinstance(a, rio.Ref)


async def test_system_bound_refs_equal_unbound_ones(system: rio.System) -> None:
    assert system.ref(TaCounter, "a") == TaCounter.ref("a")
    assert system.ref("TaCounter", "a") == TaCounter.ref("a")
    assert hash(system.ref("TaCounter", "a")) == hash(TaCounter.ref("a"))


def test_refs_refuse_pickle() -> None:
    import pickle

    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(TaCounter.ref("a"))


def test_with_timeout_must_be_positive() -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match="timeout must be positive"):
            TaCounter.ref("a").with_timeout(bad)


async def test_stateless_actor(system: rio.System) -> None:
    assert await TaStateless.ref("s").echo("hi") == "hi"


async def test_custom_type_name(system: rio.System) -> None:
    ref = TaRenamed.ref("r")
    assert ref.type_name == "ta-renamed"
    assert await system.ref("ta-renamed", "r").hello() == "hello from r"


async def test_handlers_call_other_objects(system: rio.System) -> None:
    assert await TaForwarder.ref("f").bump("fc", 3) == [1, 2, 3]
    assert await TaForwarder.ref("f").via_system("fc") == 13
    assert await TaCounter.ref("fc").get() == 13


async def test_calls_queue_at_once_and_answer_when_awaited(system: rio.System) -> None:
    ref = TaCounter.ref("pipelined")
    futures = [ref.incr() for _ in range(5)]  # sent now, in this order
    assert [await f for f in futures] == [1, 2, 3, 4, 5]


async def test_subclasses_inherit_state_type_and_handlers(system: rio.System) -> None:
    ref = TaChild.ref("c")
    assert await ref.base_handler() == "base"
    assert await ref.child_handler() == 0


async def test_ref_methods_keep_handler_names_and_docs() -> None:
    assert TaForwarder.ref("f").bump.__name__ == "bump"
    assert TaCounter.ref("a").incr.__qualname__ == "Ref[TaCounter].incr"


def test_actor_repr_names_type_and_id() -> None:
    actor = TaCounter.__new__(TaCounter)
    actor.id = "z"
    assert repr(actor) == "<TaCounter/z>"
