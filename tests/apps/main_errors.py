"""Three apps whose ``@app.main`` fails three ways; pick one as ``main_errors.py:NAME``.

- ``handler_raises``: an actor's handler raises, so main gets a ``rio.RemoteError``;
  ``rio run`` must show the handler's frames (not rio's) and the remote type.
- ``rio_error``: main gets one of rio's own errors (``BadArguments``); one line.
- ``plain_raises``: main itself raises a ``KeyError``; a traceback of this file only.

Each line that raises is marked with a ``# raises:`` comment the test looks for.
"""

import rio


def check_amount(amount: int) -> None:
    if amount > 100:
        raise ValueError(f"amount {amount} over the limit")  # raises: handler


class Till(rio.Actor):
    async def take(self, amount: int) -> int:
        check_amount(amount)
        return amount


handler_raises = rio.App("cli-handler-raises", storage="memory://")
rio_error = rio.App("cli-rio-error", storage="memory://")
plain_raises = rio.App("cli-plain-raises", storage="memory://")


@handler_raises.main
async def main_calls_a_failing_handler() -> None:
    await Till.ref("t").take(500)


@rio_error.main
async def main_passes_bad_arguments() -> None:
    await Till.ref("t").take("lots")  # type: ignore[arg-type]


def lookup(table: dict[str, int], key: str) -> int:
    return table[key]  # raises: plain


@plain_raises.main
async def main_raises_itself() -> None:
    print(lookup({"a": 1}, "b"))
