"""Messages and answers: Struct arguments and results, and bad calls refused clearly."""

import enum
from typing import Any

import msgspec
import pytest

import rio

from .helpers import AppFactory, TxHelper, is_active


class TgItem(msgspec.Struct):
    name: str
    qty: int = 1


class TgSummary(msgspec.Struct):
    count: int
    names: list[str]


class TgCartState(msgspec.Struct):
    items: list[TgItem] = msgspec.field(default_factory=list)


class TgCart(rio.Actor[TgCartState]):
    async def add(self, item: TgItem) -> TgSummary:
        self.state.items.append(item)
        return TgSummary(len(self.state.items), [i.name for i in self.state.items])

    async def add_many(self, items: list[TgItem]) -> int:
        self.state.items.extend(items)
        return len(self.state.items)

    async def by_name(self) -> dict[str, TgItem]:
        return {i.name: i for i in self.state.items}

    async def merge(self, extra: dict[str, TgItem]) -> list[TgItem]:
        return [*self.state.items, *extra.values()]

    async def maybe(self, item: TgItem | None = None) -> str:
        return "none" if item is None else item.name


class TgTyped(rio.Actor):
    async def incr(self, by: int) -> int:
        return by + 1

    async def scale(self, x: float, *, factor: float = 2.0) -> float:
        return x * factor

    async def flag(self, on: bool) -> bool:
        return on

    async def anything(self, x: Any, y) -> tuple[Any, Any]:  # type: ignore[no-untyped-def]
        return x, y

    async def nothing(self, value: None) -> None:
        return value

    def not_a_handler(self) -> int:
        return 1

    async def _hidden(self) -> None:
        pass


class TgKind(enum.IntEnum):
    LOW = 1


class TgColor(str, enum.Enum):  # noqa: UP042 - str() of this kind is not its text
    RED = "red"


class TgSeen(rio.Actor):
    async def seen(self, f: float, i: int, s: str, fs: list[float]) -> list[str]:
        return [repr(f), repr(i), repr(s), repr(fs)]


class TgBroken(rio.Actor):
    async def call(self, x: "TgNoSuchType") -> None:  # type: ignore[name-defined]  # noqa: F821
        pass


class TgHosted(rio.Actor):
    async def ping(self) -> str:
        return "pong"


class TgNotHosted(rio.Actor):
    async def ping(self) -> str:
        return "pong"


# -- Structs as messages ---------------------------------------------------------


async def test_struct_argument_and_struct_result(system: rio.System) -> None:
    cart = TgCart.ref("c")
    assert await cart.add(TgItem("apple", 2)) == TgSummary(1, ["apple"])
    assert await cart.add(TgItem("pear")) == TgSummary(2, ["apple", "pear"])


async def test_lists_and_dicts_of_structs(system: rio.System) -> None:
    cart = TgCart.ref("c2")
    assert await cart.add_many([TgItem("a"), TgItem("b", 3)]) == 2
    assert await cart.by_name() == {"a": TgItem("a"), "b": TgItem("b", 3)}
    assert await cart.merge({"z": TgItem("z")}) == [TgItem("a"), TgItem("b", 3), TgItem("z")]


async def test_optional_struct_argument(system: rio.System) -> None:
    cart = TgCart.ref("c3")
    assert await cart.maybe() == "none"
    assert await cart.maybe(None) == "none"
    assert await cart.maybe(TgItem("x")) == "x"
    assert await cart.maybe(item=TgItem("y")) == "y"


async def test_keyword_arguments(system: rio.System) -> None:
    ref = TgTyped.ref("t")
    assert await ref.incr(by=1) == 2
    assert await ref.scale(1.5) == 3.0
    assert await ref.scale(2, factor=3) == 6  # an int is a fine float
    assert await ref.flag(True) is True
    assert await ref.anything({"k": [1, 2]}, y=[1]) == ({"k": [1, 2]}, [1])
    assert await ref.nothing(None) is None


async def test_untyped_arguments_that_cannot_be_encoded(system: rio.System, runtime: str) -> None:
    ref = TgTyped.ref("t")
    if runtime == "inproc":
        # Calls within one process pass arguments by reference: nothing is encoded.
        assert await ref.anything(object, y=None) == (object, None)
        return
    with pytest.raises(rio.BadArguments, match=r"TgTyped\.anything\(\): argument 'x'"):
        await ref.anything(object, y=None)


# -- BadArguments ------------------------------------------------------------------


async def test_wrong_type_message_is_exact(system: rio.System) -> None:
    with pytest.raises(rio.BadArguments) as info:
        await TgTyped.ref("t").incr("1")
    assert str(info.value) == "TgTyped.incr(): argument 'by': Expected `int`, got `str`"


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "detail"),
    [
        ("incr", (True,), {}, "argument 'by': Expected `int`, got `bool`"),
        ("incr", (1.0,), {}, "argument 'by': Expected `int`, got `float`"),
        ("incr", (), {"by": "x"}, "argument 'by': Expected `int`, got `str`"),
        ("scale", ("x",), {}, "argument 'x': Expected `float`, got `str`"),
        ("scale", (1.0,), {"factor": None}, "argument 'factor': Expected `float`, got `NoneType`"),
        ("flag", (1,), {}, "argument 'on': Expected `bool`, got `int`"),
        ("nothing", (0,), {}, "argument 'value': Expected `null`, got `int`"),
        # The unknown keyword is named (bind() would name the missing 'by' instead).
        ("incr", (), {"bx": 2}, "unexpected keyword argument 'bx'; signature is incr(by: int)"),
    ],
)
async def test_wrong_types_are_refused(
    system: rio.System, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], detail: str
) -> None:
    with pytest.raises(rio.BadArguments) as info:
        await getattr(TgTyped.ref("t"), method)(*args, **kwargs)
    assert str(info.value).startswith(f"TgTyped.{method}(): {detail}")


class TgVar(rio.Actor):
    async def total(self, *values: int, **named: int) -> int:
        return sum(values) + sum(named.values())


async def test_annotated_star_args_are_checked_value_by_value() -> None:
    # ``*values: int`` annotates each value, not the tuple (it used to say "Expected
    # `int`, got `tuple`" for any call).
    async with rio.App("tgvar", storage="memory://", actors=[TgVar], workers=0):
        ref = TgVar.ref("v")
        assert await ref.total(1, 2, c=3) == 6
        with pytest.raises(rio.BadArguments, match="argument 'values': Expected `int`, got `str`"):
            await ref.total(1, "2")
        with pytest.raises(rio.BadArguments, match="argument 'named': Expected `int`, got `str`"):
            await ref.total(c="3")


async def test_wrong_struct_type_is_refused(system: rio.System) -> None:
    expected = "argument 'item': Expected `TgItem`, got `TgSummary`"
    with pytest.raises(rio.BadArguments, match=expected):
        await TgCart.ref("c").add(TgSummary(1, []))


async def test_bad_element_in_a_list_names_its_path(system: rio.System) -> None:
    with pytest.raises(rio.BadArguments) as info:
        await TgCart.ref("c").add_many([TgItem("a"), 3])
    assert "argument 'items'" in str(info.value)
    assert "at `$[1]`" in str(info.value)


async def test_bad_field_in_a_dict_value_names_its_path(system: rio.System) -> None:
    with pytest.raises(rio.BadArguments) as info:
        await TgCart.ref("c").merge({"k": {"name": "n", "qty": "many"}})
    assert "argument 'extra'" in str(info.value)
    assert "Expected `int`, got `str`" in str(info.value)
    assert "$[...].qty" in str(info.value)


async def test_wrong_arity(system: rio.System) -> None:
    ref = TgTyped.ref("t")
    with pytest.raises(rio.BadArguments, match="missing a required argument: 'by'") as info:
        await ref.incr()
    assert "signature is incr(by: int) -> int" in str(info.value)
    with pytest.raises(rio.BadArguments, match="too many positional arguments"):
        await ref.incr(1, 2)
    with pytest.raises(rio.BadArguments, match="too many positional arguments"):
        await ref.scale(1.0, 2.0)  # factor is keyword-only


async def test_unknown_keyword(system: rio.System) -> None:
    with pytest.raises(rio.BadArguments, match="unexpected keyword argument 'nope'"):
        await TgTyped.ref("t").incr(1, nope=2)


async def test_bad_arguments_do_not_activate_or_disturb_the_object(system: rio.System) -> None:
    with pytest.raises(rio.BadArguments):
        await TgTyped.ref("fresh").incr("x")
    assert not await is_active(system, TgTyped, "fresh")
    assert await TgTyped.ref("fresh").incr(1) == 2


async def test_unresolvable_annotation_is_a_registration_error_on_first_call(
    system: rio.System,
) -> None:
    with pytest.raises(rio.RegistrationError, match=r"TgBroken\.call\(\): cannot resolve"):
        await TgBroken.ref("b").call(1)


# -- UnknownMethod -------------------------------------------------------------------


def test_unknown_method_lists_the_handlers() -> None:
    with pytest.raises(rio.UnknownMethod) as info:
        TgTyped.ref("t").nope()
    assert str(info.value) == (
        "TgTyped has no handler 'nope'; its handlers: anything, flag, incr, nothing, scale"
    )
    assert isinstance(info.value, AttributeError)


def test_unknown_method_hints_at_a_non_async_method() -> None:
    with pytest.raises(rio.UnknownMethod, match="it exists but is not an `async def`"):
        TgTyped.ref("t").not_a_handler()


def test_unknown_method_hints_at_private_names() -> None:
    with pytest.raises(rio.UnknownMethod, match="names starting with _ are private"):
        TgTyped.ref("t")._hidden()


def test_actor_with_no_handlers_says_none() -> None:
    class TgEmpty(rio.Actor):
        pass

    with pytest.raises(rio.UnknownMethod, match="its handlers: none"):
        TgEmpty.ref("e").anything()


def test_hasattr_on_a_ref_is_false_for_dunder_names() -> None:
    assert not hasattr(TgTyped.ref("t"), "__missing_dunder__")


# -- UnknownActorType ----------------------------------------------------------------


async def test_unknown_type_name_lists_known_types(system: rio.System) -> None:
    expected = "no actor type named 'TgNoSuch' is registered"
    with pytest.raises(rio.UnknownActorType, match=expected) as info:
        system.ref("TgNoSuch", "a")
    assert "TgTyped" in str(info.value)


async def test_a_class_that_is_not_an_actor(system: rio.System) -> None:
    with pytest.raises(rio.UnknownActorType, match="int is not an actor class"):
        system.ref(int, "a")  # type: ignore[arg-type]


async def test_types_not_hosted_by_the_app_are_refused(make_app: AppFactory) -> None:
    # TxHelper: the test tooling that answers is_active on the workers path.
    async with make_app(actors=[TgHosted, TxHelper]) as system:
        assert await TgHosted.ref("h").ping() == "pong"
        with pytest.raises(rio.UnknownActorType) as info:
            await TgNotHosted.ref("h").ping()
        message = str(info.value)
        assert "does not host actor type 'TgNotHosted'" in message
        assert "hosted: TgHosted" in message
        assert "add it to App(actors=[...])" in message
        assert not await is_active(system, TgNotHosted, "h")


async def test_a_handler_gets_the_same_values_wherever_its_actor_lives(system: rio.System) -> None:
    # What another process would decode: an int for a float parameter is a float, an
    # IntEnum for an int is a plain int, a str Enum for a str is its text.
    seen = await TgSeen.ref("s").seen(3, TgKind.LOW, TgColor.RED, [1, 2.5])
    assert seen == ["3.0", "1", "'red'", "[1.0, 2.5]"]
    with pytest.raises(rio.BadArguments, match="argument 'f': Expected `float`, got an `int` too"):
        await TgSeen.ref("s").seen(10**400, 1, "s", [])
