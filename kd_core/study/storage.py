"""Where a study's trials are kept: Optuna's own storages, chosen by URL (a journal file, `sqlite:///…` or
`postgresql://…`, the RDB ones with a heartbeat), and a URL as it may be shown (without its password)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

HEARTBEAT_S = 10  # RDB storages: a running trial's heartbeat period; stale after GRACE_S without one
GRACE_S = 60


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A journal file for a plain path; RDBStorage with a heartbeat for `sqlite:///…` and `postgresql://…`."""
    if "://" not in url:
        return JournalStorage(JournalFileBackend(url))
    if not url.startswith(("sqlite:", "postgresql:", "postgresql+")):
        raise ValueError(f"storage must be a journal file path, sqlite:///… or postgresql://…; got {shown(url)}")
    try:
        with quiet_experimental():
            return RDBStorage(rdb_url(url), heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except ModuleNotFoundError as error:
        raise ValueError(f"{shown(url)} needs the {error.name} package: "
                         f"pip install -r requirements-study.txt") from None
    except Exception as error:  # sqlalchemy's connection errors: one line, not a traceback
        raise ValueError(f"cannot open storage {shown(url)}: {str(error).splitlines()[0]}") from None


def rdb_url(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; requirements-study.txt installs psycopg2."""
    return "postgresql+psycopg2://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def shown(url: str) -> str:
    """The URL without its password (it goes into logs and JSON)."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can parse: say nothing of it beyond the scheme
        return url.split("://")[0] + "://…"


@contextmanager
def quiet_experimental() -> Iterator[None]:
    """Optuna marks some APIs used here (fail_stale_trials, constant_liar, the matplotlib plots) experimental."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
