"""Actor classes that cannot work are refused when their class statement runs."""

import msgspec
import pytest

import rio
from rio.core.registry import lookup_type


class TrOkState(msgspec.Struct):
    value: int = 0


class TrTaken(rio.Actor):
    async def ping(self) -> str:
        return "pong"


def test_init_with_required_arguments() -> None:
    with pytest.raises(rio.RegistrationError) as info:

        class TrNeedsArgs(rio.Actor):
            def __init__(self, db: object, *, pool: int) -> None:
                self.db = db

    message = str(info.value)
    assert "__init__ takes required arguments (db, pool)" in message
    assert "rio creates actors with no arguments" in message


class TrInit(rio.Actor):
    # At module level: worker processes find actor classes by importing their module.
    def __init__(self, greeting: str = "hi", *args: object, **kwargs: object) -> None:
        self.greeting = greeting

    async def greet(self) -> str:
        return f"{self.greeting} {self.id}"


async def test_init_with_defaults_is_fine_and_runs_on_activation(system: rio.System) -> None:
    assert await TrInit.ref("x").greet() == "hi x"


@pytest.mark.parametrize(
    "reserved", ["save", "clear_state", "deactivate", "spawn", "run_blocking", "start_thread"]
)
def test_reserved_handler_names(reserved: str) -> None:
    async def handler(self: object) -> None:
        pass

    with pytest.raises(rio.RegistrationError) as info:
        type(f"TrReserved_{reserved}", (rio.Actor,), {reserved: handler})
    assert f"clashes with rio's own {reserved!r}; rename the handler" in str(info.value)


@pytest.mark.parametrize("reserved", ["with_timeout", "type_name", "ref", "id", "state", "system"])
def test_names_that_refs_or_actors_use_are_reserved(reserved: str) -> None:
    async def handler(self: object) -> None:
        pass

    with pytest.raises(rio.RegistrationError, match="clashes with rio's own"):
        type(f"TrReservedRef_{reserved}", (rio.Actor,), {reserved: handler})


def test_state_type_without_defaults() -> None:
    class TrNoDefaults(msgspec.Struct):
        value: int

    with pytest.raises(rio.RegistrationError) as info:

        class TrBadState(rio.Actor[TrNoDefaults]):
            pass

    assert "must build a default with no arguments (give every field a default)" in str(info.value)


def test_state_type_that_msgspec_cannot_encode() -> None:
    class Opaque:
        pass

    with pytest.raises(rio.RegistrationError, match="cannot be encoded by msgspec"):

        class TrOpaqueState(rio.Actor[Opaque]):
            pass


def test_name_clash_between_two_classes() -> None:
    with pytest.raises(rio.RegistrationError) as info:

        class Impostor(rio.Actor, name="TrTaken"):
            pass

    message = str(info.value)
    assert "actor type name 'TrTaken' is taken by" in message
    assert "test_registration.TrTaken" in message
    assert "Impostor" in message
    assert "name='...'" in message
    assert lookup_type("TrTaken").cls is TrTaken  # the original keeps its name


def test_redefining_the_same_class_replaces_it() -> None:
    # A reloaded module defines a class with the same module and qualified name.
    first = type("TrReloaded", (rio.Actor,), {"__module__": __name__})
    second = type("TrReloaded", (rio.Actor,), {"__module__": __name__})
    assert lookup_type("TrReloaded").cls is second
    assert first is not second


@pytest.mark.parametrize("bad", ["a/b", "/", "a\x00b", "x\ud800"])
def test_bad_type_names(bad: str) -> None:
    # NUL and lone surrogates: no storage engine keeps them alike (PostgreSQL refuses NUL).
    with pytest.raises(rio.RegistrationError, match="valid Unicode text, with no '/' and no NUL"):
        type("TrBadName", (rio.Actor,), {}, name=bad)


@pytest.mark.parametrize("ttl", [0, -1.0, "x", True])
def test_idle_ttl_must_be_positive(ttl: object) -> None:
    # "x" used to fail inside the check with a bare TypeError ('<=' not supported).
    with pytest.raises(rio.RegistrationError, match="idle_ttl must be positive seconds or None"):
        type("TrBadTtl", (rio.Actor,), {}, idle_ttl=ttl)


def test_an_unknown_class_keyword_is_named() -> None:
    # It used to be "TrTypo.__init_subclass__() takes no keyword arguments".
    with pytest.raises(rio.RegistrationError, match=r"keyword\(s\) reentrnt; an actor"):
        type("TrTypo", (rio.Actor,), {}, reentrnt=True)


def test_handlers_are_public_async_methods_only() -> None:
    class TrMixed(rio.Actor[TrOkState]):
        async def handler(self) -> None:
            pass

        def sync(self) -> None:
            pass

        async def _private(self) -> None:
            pass

        @staticmethod
        async def static() -> None:
            pass

        @classmethod
        async def klass(cls) -> None:
            pass

        async def on_activate(self) -> None:
            pass

    assert sorted(lookup_type("TrMixed").handlers) == ["handler"]


def test_class_options_are_recorded_and_inherited() -> None:
    class TrOptions(rio.Actor[TrOkState], idle_ttl=None, reentrant=True, save_on_deactivate=True):
        pass

    class TrOptionsChild(TrOptions):
        pass

    class TrOptionsOverride(TrOptions, idle_ttl=5, reentrant=False, save_on_deactivate=False):
        pass

    parent, child, override = (
        lookup_type(n) for n in ("TrOptions", "TrOptionsChild", "TrOptionsOverride")
    )
    assert (parent.idle_ttl, parent.reentrant, parent.save_on_deactivate) == (None, True, True)
    assert (child.idle_ttl, child.reentrant, child.save_on_deactivate) == (None, True, True)
    assert child.state_type is TrOkState
    assert (override.idle_ttl, override.reentrant, override.save_on_deactivate) == (5, False, False)
    assert lookup_type("TrTaken").idle_ttl == 600.0  # the default
