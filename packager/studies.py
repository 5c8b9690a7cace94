"""Optuna studies kept in a database: opened one way by `tune` and by the distil stage's shared search.

Several workers (processes, torchrun jobs, machines) may open the same study at once: the first creates the
schema while the others wait and retry; every worker beats a heartbeat, and a trial whose worker died is failed
after the grace period and run again (at most twice) by the next worker that asks.
"""
from __future__ import annotations

import time
import warnings
from typing import Any

from .errors import EdgepackError

SCHEMA_RACE_ATTEMPTS = 5


def public_url(url: str) -> str:
    """A storage URL without its password (it goes to the manifest and the console)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def open_storage(optuna: Any, url: str, *, heartbeat_s: float, grace_s: float, flag: str) -> Any:
    """The study database at ``url`` with heartbeats and retried stale trials; ``EdgepackError`` naming ``flag``
    when it cannot be opened (a bad URL, a missing driver, an unreachable database)."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # wait out others' writes
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # optuna >= 4.9's name
    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry_kwarg = {"heartbeat_stale_trial_callback": retry(max_retry=2)} if retry else \
                    {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=2)}
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                                                  grace_period=grace_s, **retry_kwarg)
        except Exception as exc:
            # another worker created the schema meanwhile: sqlite says IntegrityError or "table … already exists"
            if attempt < SCHEMA_RACE_ATTEMPTS - 1 and ("IntegrityError" in type(exc).__name__
                                                       or "already exists" in str(exc)):
                time.sleep(1 + attempt)
                attempt += 1
                continue
            raise EdgepackError(f"{flag}: cannot open {public_url(url)} "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def beyond_budget(optuna: Any, study: Any, number: int, budget: int) -> bool:
    """Whether trial ``number``, just started, is one too many for a study of ``budget`` trials.

    Workers that count the study at the same moment each start a trial; counting again once the trial exists
    settles it the same way on every worker: the trials that are running or finished (not failed) are ranked by
    number, and those past the first ``budget`` give way.
    """
    live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
    numbers = sorted(t.number for t in study.get_trials(deepcopy=False, states=live))
    return number in numbers[budget:]
