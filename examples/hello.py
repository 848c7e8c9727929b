"""Hello, rio: one actor type, one call.

Run it::

    python examples/hello.py

A ``Greeter`` is a virtual actor: it is never created explicitly. The first message
to ``Greeter.ref("world")`` activates it; later messages to the same id reach the
same activation, one at a time.
"""

import rio


class Greeter(rio.Actor):
    """Greets people and remembers how many it has greeted (in memory only)."""

    async def on_activate(self) -> None:
        self.greeted = 0  # activation-local: starts again if the actor is re-activated

    async def greet(self, name: str) -> str:
        self.greeted += 1
        return f"Hello, {name}! (greeting #{self.greeted} from Greeter/{self.id})"


app = rio.App("hello")


@app.main
async def main() -> None:
    greeter = Greeter.ref("world")  # a ref is just (type, id): cheap, no I/O
    print(await greeter.greet("Ada"))
    print(await greeter.greet("Grace"))


if __name__ == "__main__":
    app.run()
