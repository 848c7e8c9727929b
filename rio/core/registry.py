"""The registry: actor type names to classes, handlers and their signatures.

Every subclass of :class:`rio.Actor` is registered when its class statement runs.
Handlers are the class's public ``async def`` methods; their annotations are read
lazily, on first call, so forward references to types defined later in the module
resolve.
"""

from __future__ import annotations

import inspect
import operator
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from rio.core.errors import BadArguments, RegistrationError, UnknownActorType, UnknownMethod

if TYPE_CHECKING:
    from rio.core.actor import Actor

__all__ = [
    "ActorType",
    "Handler",
    "actor_type",
    "all_types",
    "key_text_problem",
    "lookup_type",
    "register",
]

#: Names of the Actor base and the Ref that handlers may not take.
RESERVED: frozenset[str] = frozenset(
    {
        "id",
        "state",
        "save",
        "clear_state",
        "deactivate",
        "ref",
        "spawn",
        "run_blocking",
        "start_thread",
        "start_timer",
        "register_reminder",
        "unregister_reminder",
        "reminders",
        "receive_reminder",
        "publish",
        "subscribe",
        "on_activate",
        "on_deactivate",
        "type_name",
        "with_timeout",
        "system",
    }
)

Validator = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]


def _each(
    param: inspect.Parameter, check: Callable[[Any], Any] | None
) -> Callable[[Any], Any] | None:
    """``check`` for a parameter: for ``*args: T`` and ``**kwargs: T``, applied to each value."""
    if check is None:
        return None
    if param.kind == param.VAR_POSITIONAL:

        def check_each(values: Any) -> Any:
            return tuple(check(v) for v in values)

        return check_each
    if param.kind == param.VAR_KEYWORD:

        def check_each_keyword(values: Any) -> Any:
            return {k: check(v) for k, v in values.items()}

        return check_each_keyword
    return check


def key_text_problem(text: str) -> str | None:
    """Why ``text`` cannot be part of an actor's key (type name or id), or None.

    Keys are stored as UTF-8 text by every engine: a NUL character (which PostgreSQL
    refuses) and a lone surrogate (which has no UTF-8 form) are refused everywhere.
    """
    if "\x00" in text:
        return "it contains a NUL character"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as e:
            return f"it is not valid Unicode text ({e.reason} at index {e.start})"
    return None


def _make_checker(name: str, tp: Any) -> Callable[[Any], Any] | None:
    """A function that returns the value (possibly converted) or raises ``ValueError``.

    A value is converted as it would arrive from another process, so a handler gets
    the same wherever its actor lives: an ``int`` for a ``float`` parameter arrives as
    a ``float``, an ``IntEnum`` or a ``str`` subclass for ``int`` or ``str`` as a
    plain ``int`` or ``str``.
    """
    if tp is Any or tp is object or tp is inspect.Parameter.empty:
        return None
    if tp is int:

        def check_int(v: Any) -> Any:
            if type(v) is int:
                return v
            if isinstance(v, int) and not isinstance(v, bool):
                return operator.index(v)  # an IntEnum's value, as it travels
            raise ValueError(f"Expected `int`, got `{type(v).__name__}`")

        return check_int
    if tp is float:

        def check_float(v: Any) -> Any:
            if type(v) is float:
                return v
            if isinstance(v, int | float) and not isinstance(v, bool):
                try:
                    return float(v)
                except OverflowError:
                    raise ValueError("Expected `float`, got an `int` too large for one") from None
            raise ValueError(f"Expected `float`, got `{type(v).__name__}`")

        return check_float
    if tp is str:

        def check_str(v: Any) -> Any:
            if type(v) is str:
                return v
            if isinstance(v, str):
                return str.__str__(v)  # the text itself, as it travels (str() of an Enum is not)
            raise ValueError(f"Expected `str`, got `{type(v).__name__}`")

        return check_str
    if tp in (bytes, bytearray):

        def check_buffer(v: Any) -> Any:
            if type(v) is tp:
                return v
            if isinstance(v, tp):
                return tp(v)
            raise ValueError(f"Expected `{tp.__name__}`, got `{type(v).__name__}`")

        return check_buffer
    if isinstance(tp, type) and (tp is bool or issubclass(tp, msgspec.Struct)):

        def check_instance(v: Any) -> Any:
            if isinstance(v, tp):
                return v
            raise ValueError(f"Expected `{tp.__name__}`, got `{type(v).__name__}`")

        return check_instance
    if tp is None or tp is type(None):

        def check_none(v: Any) -> Any:
            if v is None:
                return v
            raise ValueError(f"Expected `null`, got `{type(v).__name__}`")

        return check_none

    def check_convert(v: Any) -> Any:
        try:
            return msgspec.convert(v, tp, strict=True)
        except msgspec.ValidationError as e:
            raise ValueError(str(e)) from None

    return check_convert


@dataclass(slots=True)
class Handler:
    """One handler of an actor type: its function, options and argument checks."""

    owner: str
    name: str
    fn: Callable[..., Any]
    reentrant: bool
    _validate: Validator | None = None
    _ready: bool = False
    #: The argument check to call on the hot path; prepares itself on first use.
    check: Validator = field(default=None)  # type: ignore[assignment]
    return_type: Any = None
    param_types: list[tuple[str, Any]] = field(default_factory=list)
    #: Parameter names in order; the keyword-only ones start at ``n_positional``.
    param_names: tuple[str, ...] = ()
    n_positional: int = 0
    defaults: dict[str, Any] = field(default_factory=dict)
    #: False when the handler takes ``*args`` or ``**kwargs`` (it cannot cross processes).
    wire_ok: bool = True
    _args_decoder: Any = None
    _result_decoder: Any = None

    def __post_init__(self) -> None:
        self.check = self.validate

    def prepare(self) -> None:
        """Resolve annotations now (done lazily on first call otherwise)."""
        if not self._ready:
            self._prepare()

    @property
    def args_decoder(self) -> msgspec.msgpack.Decoder[Any]:
        """A msgpack decoder for this handler's arguments as one array, in order."""
        if self._args_decoder is None:
            self.prepare()
            if not self.wire_ok:
                raise BadArguments(
                    f"{self.owner}.{self.name}() takes *args or **kwargs, so it cannot be "
                    "called across processes; give it named, annotated parameters"
                )
            types = tuple(t for _, t in self.param_types)
            self._args_decoder = msgspec.msgpack.Decoder(tuple[types] if types else tuple[()])  # type: ignore[valid-type]
        return self._args_decoder  # type: ignore[no-any-return]

    @property
    def result_decoder(self) -> msgspec.msgpack.Decoder[Any]:
        """A msgpack decoder for this handler's return annotation."""
        if self._result_decoder is None:
            self.prepare()
            rt = self.return_type
            self._result_decoder = msgspec.msgpack.Decoder(Any if rt is None else rt)
        return self._result_decoder  # type: ignore[no-any-return]

    def split_wire_args(self, values: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword-only arguments from the in-order wire tuple."""
        n = self.n_positional
        if n == len(values):
            return values, {}
        return values[:n], dict(zip(self.param_names[n:], values[n:], strict=True))

    def validate(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Check a call's arguments against the handler; returns them, possibly converted.

        Raises:
            BadArguments: naming the handler, the parameter and what was wrong.
        """
        if not self._ready:
            self._prepare()
        assert self._validate is not None
        return self._validate(args, kwargs)

    def _prepare(self) -> None:
        qual = f"{self.owner}.{self.name}()"
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception as e:
            raise RegistrationError(
                f"{qual}: cannot resolve its annotations ({type(e).__name__}: {e}); "
                "annotation types must be importable from the handler's module"
            ) from e
        sig = inspect.signature(self.fn)
        params = list(sig.parameters.values())[1:]  # drop self
        self.return_type = hints.get("return", Any)
        self.param_types = [(p.name, hints.get(p.name, Any)) for p in params]
        self.param_names = tuple(p.name for p in params)
        self.wire_ok = not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
        self.n_positional = sum(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
        )
        self.defaults = {p.name: p.default for p in params if p.default is not p.empty}
        checkers = [_each(p, _make_checker(p.name, hints.get(p.name, Any))) for p in params]
        takes_any_keyword = any(p.kind == p.VAR_KEYWORD for p in params)
        keywords = {p.name for p in params if p.kind != p.POSITIONAL_ONLY}
        simple = all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        n = len(params)
        names = [p.name for p in params]
        by_name = dict(zip(names, checkers, strict=True))
        has_checks = any(c is not None for c in checkers)
        bound_sig = sig.replace(parameters=params)

        def fail(detail: str, cause: BaseException | None = None) -> BadArguments:
            err = BadArguments(f"{qual}: {detail}")
            err.__cause__ = cause
            return err

        def check_one(pname: str, value: Any) -> Any:
            checker = by_name.get(pname)
            if checker is None:
                return value
            try:
                return checker(value)
            except ValueError as e:
                raise fail(f"argument {pname!r}: {e}") from None

        # The common case, positional arguments of exactly the annotated builtin or
        # Struct types, is checked by ``type(a) is t`` alone.
        exact = tuple(
            t if isinstance(t, type) and t not in (bool, object) and c is not None else None
            for (_, t), c in zip(self.param_types, checkers, strict=True)
        )
        exact_ok = simple and all(e is not None for e in exact)

        def validate(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            if exact_ok and not kwargs and len(args) == n:
                for a, t in zip(args, exact):  # noqa: B905 - lengths checked above
                    if type(a) is not t:
                        break
                else:
                    return args, kwargs
            return check_slow(args, kwargs)

        def check_slow(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            if simple and not kwargs and len(args) == n:
                if not has_checks:
                    return args, kwargs
                out = []
                for i, v in enumerate(args):
                    c = checkers[i]
                    if c is None:
                        out.append(v)
                        continue
                    try:
                        out.append(c(v))
                    except ValueError as e:
                        raise fail(f"argument {names[i]!r}: {e}") from None
                return tuple(out), kwargs
            unknown = [k for k in kwargs if k not in keywords]
            if unknown and not takes_any_keyword:  # before bind(), which names a missing one
                raise fail(
                    f"unexpected keyword argument {unknown[0]!r}; signature is "
                    f"{self.name}{bound_sig}"
                )
            try:
                bound = bound_sig.bind(*args, **kwargs)
            except TypeError as e:
                raise fail(f"{e}; signature is {self.name}{bound_sig}") from None
            for pname, value in list(bound.arguments.items()):
                bound.arguments[pname] = check_one(pname, value)
            return tuple(bound.args), dict(bound.kwargs)

        fast: Validator = validate
        if exact_ok and n == 0:

            def fast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
                if not args and not kwargs:
                    return args, kwargs
                return check_slow(args, kwargs)

        elif exact_ok and n == 1:
            t0 = exact[0]

            def fast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
                if not kwargs and len(args) == 1 and type(args[0]) is t0:
                    return args, kwargs
                return check_slow(args, kwargs)

        self._validate = fast
        self.check = fast
        self._ready = True


@dataclass(slots=True)
class ActorType:
    """What rio knows about one actor class."""

    name: str
    cls: type[Actor[Any]]
    state_type: Any | None
    handlers: dict[str, Handler]
    reentrant: bool
    idle_ttl: float | None
    save_on_deactivate: bool
    has_on_activate: bool
    has_on_deactivate: bool
    ref_cls: type[Any] = field(default=object)
    #: How a reminder's firing reaches the type's ``receive_reminder`` (None: the type
    #: has none). Not a handler refs offer: only the reminder pollers call it.
    reminder: Handler | None = None

    def handler(self, method: str) -> Handler:
        """The handler called ``method``.

        Raises:
            UnknownMethod: naming the type and listing its handlers.
        """
        h = self.handlers.get(method)
        if h is None:
            if method == "receive_reminder" and self.reminder is not None:
                return self.reminder  # a reminder's firing, from another process
            raise UnknownMethod(self.unknown_method_message(method))
        return h

    def unknown_method_message(self, method: str) -> str:
        """The message for a call to a method this type lacks."""
        known = ", ".join(sorted(self.handlers)) or "none"
        hint = ""
        attr = getattr(self.cls, method, None)
        if attr is not None and not inspect.iscoroutinefunction(attr):
            hint = " (it exists but is not an `async def`, so it is not a handler)"
        elif method.startswith("_"):
            hint = " (names starting with _ are private, not handlers)"
        return f"{self.name} has no handler {method!r}{hint}; its handlers: {known}"


_TYPES: dict[str, ActorType] = {}


def register(info: ActorType) -> None:
    """Register an actor type under its name.

    Re-registering a class of the same module and qualified name replaces the old one
    (a reloaded module); another class under a taken name is an error.
    """
    old = _TYPES.get(info.name)
    if old is not None and old.cls is not info.cls:
        same = (old.cls.__module__, old.cls.__qualname__) == (
            info.cls.__module__,
            info.cls.__qualname__,
        )
        if not same:
            raise RegistrationError(
                f"actor type name {info.name!r} is taken by "
                f"{old.cls.__module__}.{old.cls.__qualname__}; give "
                f"{info.cls.__module__}.{info.cls.__qualname__} another one with "
                f"class {info.cls.__name__}(rio.Actor, name='...')"
            )
    _TYPES[info.name] = info


def lookup_type(name: str) -> ActorType:
    """The registered type called ``name``.

    Raises:
        UnknownActorType: listing the registered names.
    """
    info = _TYPES.get(name)
    if info is None:
        known = ", ".join(sorted(_TYPES)) or "none"
        raise UnknownActorType(f"no actor type named {name!r} is registered; known: {known}")
    return info


def actor_type(cls: type[Any]) -> ActorType:
    """The :class:`ActorType` of an actor class."""
    info = cls.__dict__.get("_rio_type")
    if not isinstance(info, ActorType):
        raise UnknownActorType(
            f"{cls.__qualname__} is not an actor class: subclass rio.Actor to make one"
        )
    return info


def all_types() -> dict[str, ActorType]:
    """A snapshot of every registered type by name."""
    return dict(_TYPES)
