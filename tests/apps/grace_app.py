"""A cluster node that stays in its join grace for 30 s (``--cluster`` gives the URL)."""

import rio


class GaPing(rio.Actor):
    async def ping(self) -> str:
        return "pong"


app = rio.App(
    "cli-grace",
    storage="memory://",
    cluster=rio.ClusterSettings(url="sqlite:///unused.db", secret="s", join_grace=30.0),
)
