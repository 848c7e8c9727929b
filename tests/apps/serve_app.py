"""An app without a main: ``rio run`` serves it until SIGINT or SIGTERM."""

import msgspec

import rio


class Note(msgspec.Struct):
    text: str = ""


class Notebook(rio.Actor[Note]):
    async def write(self, text: str) -> None:
        self.state.text = text
        await self.save()


app = rio.App("cli-serve")
