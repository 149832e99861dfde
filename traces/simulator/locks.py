"""A lock service with fencing tokens, served from its own process.

`LockService` lives in a multiprocessing manager server (a separate process);
agents hold proxies to it. Each grant of a lock gets the next token of that
lock name, so tokens are monotonic per lock. With `double_grant`, the service
has the bug of handing the current holder's token to a second requester while
the lock is still held by one owner (every fourth contended acquire), so a
token is held by at most two sections at once.
"""

from __future__ import annotations

import threading
from multiprocessing.managers import BaseManager


class LockTimeout(Exception):
    pass


class LockService:
    def __init__(self, *, double_grant: bool = False, double_grant_every: int = 4):
        self._cond = threading.Condition()
        self._holders: dict[str, set[str]] = {}
        self._tokens: dict[str, int] = {}
        self._double_grant = double_grant
        self._double_grant_every = max(1, double_grant_every)
        self._contended = 0
        self._grants = 0
        self._double_grants = 0
        self._doubled: set[tuple[str, int]] = set()

    def acquire(self, name: str, owner: str, timeout_s: float = 30.0) -> int:
        """Block until `name` is free; return the fencing token granted to `owner`."""
        with self._cond:
            holders = self._holders.setdefault(name, set())
            if holders:
                self._contended += 1
                token = self._tokens[name]
                double = (
                    len(holders) == 1
                    and (name, token) not in self._doubled
                    and self._contended % self._double_grant_every == 1
                )
                if self._double_grant and double:
                    # The bug: the holder's token is granted a second time.
                    holders.add(owner)
                    self._doubled.add((name, token))
                    self._double_grants += 1
                    self._grants += 1
                    return token
            if not self._cond.wait_for(lambda: not self._holders[name], timeout=timeout_s):
                raise LockTimeout(f"lock {name!r} not granted to {owner} within {timeout_s}s")
            token = self._tokens.get(name, 0) + 1
            self._tokens[name] = token
            self._holders[name] = {owner}
            self._grants += 1
            return token

    def release(self, name: str, owner: str) -> None:
        with self._cond:
            self._holders.get(name, set()).discard(owner)
            self._cond.notify_all()

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "grants": self._grants,
                "contended": self._contended,
                "double_grants": self._double_grants,
            }


class LockManager(BaseManager):
    pass


LockManager.register("LockService", LockService)
