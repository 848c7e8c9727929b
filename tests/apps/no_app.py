"""A module that imports rio but defines no ``rio.App``."""

import rio

GREETING = "hello"
NOT_AN_APP = rio.App  # the class itself is not an app
