"""``rio``'s public surface: exactly these names, sorted, each documented."""

import inspect

import rio

PUBLIC = [
    "ActivationFailed",
    "Actor",
    "App",
    "BadArguments",
    "CallTimeout",
    "ClusterClient",
    "ClusterSettings",
    "ConfigError",
    "Deadlock",
    "Lagged",
    "NoNodesAvailable",
    "NoSystemRunning",
    "NodeUnreachable",
    "Overloaded",
    "Ref",
    "RegistrationError",
    "Reminder",
    "RemoteError",
    "RioError",
    "RuntimeStats",
    "StateConflict",
    "StateDecodeError",
    "StateEncodeError",
    "StorageError",
    "StorageUnavailable",
    "Subscription",
    "System",
    "SystemStopping",
    "Timer",
    "UnknownActorType",
    "UnknownMethod",
    "WorkerLost",
    "__version__",
    "connect",
    "current_system",
    "reentrant",
    "run",
    "timeout",
]


def test_all_is_exactly_the_public_surface() -> None:
    assert rio.__all__ == PUBLIC


def test_all_is_sorted() -> None:
    assert rio.__all__ == sorted(rio.__all__)


def test_every_public_name_exists() -> None:
    missing = [name for name in rio.__all__ if not hasattr(rio, name)]
    assert missing == []


def test_no_other_public_module_attributes() -> None:
    # Submodules imported by rio/__init__ are fine; any other public name must be in __all__.
    extra = [
        name
        for name, value in vars(rio).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name not in rio.__all__
    ]
    assert extra == []


def test_every_public_name_has_a_docstring() -> None:
    undocumented = [
        name
        for name in rio.__all__
        if name != "__version__" and not (inspect.getdoc(getattr(rio, name)) or "").strip()
    ]
    assert undocumented == []


def test_public_methods_of_public_classes_have_docstrings() -> None:
    undocumented = []
    for name in rio.__all__:
        obj = getattr(rio, name)
        if not inspect.isclass(obj) or issubclass(obj, BaseException):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_") or not callable(getattr(obj, attr, None)):
                continue
            if not (inspect.getdoc(value) or "").strip():
                undocumented.append(f"{name}.{attr}")
    assert undocumented == []


def test_version_is_a_string() -> None:
    assert isinstance(rio.__version__, str)
    assert rio.__version__


def test_error_tree() -> None:
    errors = [getattr(rio, n) for n in rio.__all__ if n.endswith(("Error", "Failed"))]
    errors += [
        rio.CallTimeout,
        rio.Deadlock,
        rio.NoSystemRunning,
        rio.UnknownActorType,
        rio.UnknownMethod,
        rio.BadArguments,
        rio.SystemStopping,
        rio.WorkerLost,
        rio.NodeUnreachable,
        rio.NoNodesAvailable,
        rio.Overloaded,
        rio.StateConflict,
    ]
    for cls in errors:
        assert issubclass(cls, rio.RioError), cls
    for cls in (rio.StorageUnavailable, rio.StateConflict, rio.StateDecodeError):
        assert issubclass(cls, rio.StorageError)
    # Each also is the builtin a user would naturally catch.
    assert issubclass(rio.CallTimeout, TimeoutError)
    assert issubclass(rio.BadArguments, TypeError)
    assert issubclass(rio.UnknownMethod, AttributeError)
    assert issubclass(rio.UnknownActorType, LookupError)
    assert issubclass(rio.ConfigError, ValueError)
