"""Writing a PostgreSQL gradebook through dropped connections: the writers' lock and retries.

Several grading runs may write one gradebook; :class:`WriterLock` makes them take turns (a
session-level advisory lock around each batch of notebooks' writes). Connections to a database
server can drop at any time (a restart, a failover, an idle timeout, ``pg_terminate_backend``),
so:

* the lock takes a connection from its own pool for each turn, checked with a ping first
  (``pool_pre_ping``): a connection that died while idle is replaced, and the lock is taken
  again on the new one (the server released it with the dead session);
* waiting for the lock has a limit (:data:`LOCK_TIMEOUT`, PostgreSQL's ``lock_timeout``): a run
  that holds it forever makes the others stop with a clear error, not hang;
* a failure inside a turn is never hidden by a failure to unlock (whose connection may be the
  one that dropped): the original error is raised;
* :func:`retrying` runs a notebook's write again when the connection dropped under it (nbgrader's
  helpers commit as they go and every write is an update-or-create, so a second attempt
  records the grade once); any other error is raised at once. A dropped connection is never
  read as "no row yet": it is an error, raised or retried, never an answer.

:func:`ping_on_checkout` gives nbgrader's own engine the same check before each transaction.
SQLite needs none of this (one file, one writer): the lock is then a no-op.
"""

from __future__ import annotations

import time

LOCK_TIMEOUT = "120s"
RETRIES = 3
RETRY_PAUSE = 0.5  # seconds, doubled after each attempt


class LockTimeout(RuntimeError):
    """Another grading run held the gradebook's writer lock longer than :data:`LOCK_TIMEOUT`."""


def is_disconnect(err: BaseException) -> bool:
    """The database connection dropped (SQLAlchemy invalidated it), as opposed to a refused or
    failed statement."""
    from sqlalchemy.exc import DBAPIError

    return isinstance(err, DBAPIError) and bool(err.connection_invalidated)


def retrying(step, *args, rollback=None, retries: int = RETRIES, pause: float = RETRY_PAUSE):
    """``step(*args)``, run again (after ``rollback()``) when the connection dropped under it."""
    for attempt in range(retries + 1):
        try:
            return step(*args)
        except Exception as err:
            if not is_disconnect(err) or attempt == retries:
                raise
            if rollback is not None:
                try:
                    rollback()
                except Exception:  # noqa: BLE001 - the session is reset; the retry tells
                    pass
            time.sleep(pause * 2 ** attempt)


def ping_on_checkout(engine) -> None:
    """Check every connection ``engine``'s pool hands out with ``SELECT 1``, replacing a dead one
    (SQLAlchemy's pessimistic disconnect handling, for an engine made elsewhere: nbgrader's)."""
    from sqlalchemy import event
    from sqlalchemy.exc import DisconnectionError

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection, connection_record, connection_proxy):
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except Exception as err:  # noqa: BLE001 - any failure: this connection is unusable
            raise DisconnectionError(f"the gradebook's connection dropped: {err}") from err


class WriterLock:
    """Makes concurrent grading runs take turns at writing a PostgreSQL gradebook (no-op elsewhere).

    nbgrader checks, then inserts and commits inside its own helpers (``Gradebook()`` creating the
    schema, ``add_student``, ``add_submission``), so two runs writing a fresh database or the same
    student at once can both insert, and a retry could not make those multi-commit steps atomic.
    A session-level advisory lock, taken on a connection of its own around opening the gradebook
    and around each batch's write, serialises only those milliseconds (the notebooks still run
    in parallel); the server drops it if a run dies.
    """

    KEY = 0x57E_C0DE_6B  # any constant shared by every ste-course writer of the database

    def __init__(self, url: str, lock_timeout: str = LOCK_TIMEOUT):
        self.engine = self.conn = None
        self.lock_timeout = lock_timeout
        if url.startswith("postgresql"):
            from sqlalchemy import create_engine

            self.engine = create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)

    def __enter__(self):
        if self.engine is None:
            return self
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError

        self.conn = retrying(self.engine.connect)
        try:
            conn = self.conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("SELECT set_config('lock_timeout', :t, false)"), {"t": self.lock_timeout})
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.KEY})
        except OperationalError as err:
            self._drop()
            if "lock timeout" in str(err).lower():
                raise LockTimeout(f"another grading run held the gradebook's writer lock for more than "
                                  f"{self.lock_timeout}; is a run stuck? (PostgreSQL: {err.orig})") from err
            raise
        except BaseException:
            self._drop()
            raise
        return self

    def __exit__(self, kind, err, tb):
        if self.conn is None:
            return None
        from sqlalchemy import text

        try:
            self.conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.KEY})
        except Exception:  # noqa: BLE001
            if err is None:  # nothing else went wrong: the unlock's failure is the error
                self._drop()
                raise
            # the original error is what matters (the server released the lock with the session)
        self._drop(failed=err is not None)
        return None

    def _drop(self, failed: bool = True):
        """Give the turn's connection back; after a failure, discard it (closing its session,
        so the server releases whatever it held) rather than pool it."""
        if self.conn is not None:
            try:
                self.conn.invalidate() if failed else self.conn.close()
            except Exception:  # noqa: BLE001 - a dead connection cannot be closed cleanly
                pass
            self.conn = None

    def write(self, step, *args, rollback=None):
        """``step(*args)`` in a turn, taken again and run again if the connection dropped."""
        def turn():
            with self:
                return step(*args)

        return retrying(turn, rollback=rollback)

    def close(self):
        self._drop()
        if self.engine is not None:
            self.engine.dispose()
