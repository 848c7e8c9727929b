"""A file that raises while it is imported: ``rio run`` must show this file's frames
only (not rio's, typer's or importlib's) and then ``importing ... failed``."""

import rio


def read_setting() -> int:
    return int("not a number")  # raises: import


SETTING = read_setting()  # raises: module level
app = rio.App("cli-import-fails", storage="memory://")
