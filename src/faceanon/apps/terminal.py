"""What the commands share: exit codes, lines to the terminal, keys read from files (asking
for a passphrase when one is needed), a one-line progress display."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    from faceanon.secure.keys import SecretKey

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


PASSPHRASE_ENV = "FACEANON_PASSPHRASE"


MIN_PASSPHRASE = 20  # shorter ones get a warning at keygen (README, Keys)


def say(message: str) -> None:
    print(message, file=sys.stderr)


def ask_passphrase(confirm: bool = False) -> Callable[[], str]:
    def ask() -> str:
        if PASSPHRASE_ENV in os.environ:
            return os.environ[PASSPHRASE_ENV]
        if not sys.stdin.isatty():
            raise FaceanonError(f"passphrase needed: set {PASSPHRASE_ENV} or run in a terminal")
        first = getpass.getpass("passphrase: ")
        if confirm and getpass.getpass("again: ") != first:
            raise FaceanonError("the two passphrases differ")
        return first

    return ask


def load_key(path: Path) -> SecretKey:
    from faceanon.secure.keys import read_key_file

    return read_key_file(path, ask_passphrase())


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.label = ""
        self.live = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        self.show(f": step {done}/{total}")

    def show(self, detail: str = "") -> None:
        if self.live:
            print(f"\r\033[K{self.label}{detail}", end="", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.live:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
