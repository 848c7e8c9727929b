"""Two apps in one module: ``rio run`` must be told which (``two_apps.py:second``)."""

import rio

first = rio.App("first", storage="memory://")
second = rio.App("second", storage="memory://")


@first.main
async def main_of_first() -> None:
    print("main of first")


@second.main
async def main_of_second() -> None:
    print("main of second")
