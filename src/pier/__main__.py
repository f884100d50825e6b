"""`pier` (the console script) and `python -m pier`: the CLI, imported only when it runs.

A process that `pier serve` spawns (uvicorn's workers, the writer and delivery processes)
imports the script that started `pier serve` again, as multiprocessing's spawn does: this
module, which imports nothing, so that each imports only what it runs
(process.supervisor)."""

from __future__ import annotations


def main() -> None:
    from .cli import main as cli

    cli()


if __name__ == "__main__":
    main()
