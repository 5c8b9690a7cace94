"""The shared optuna study: workers that race for the last place settle it the same way."""
from __future__ import annotations

import optuna

from packager.studies import beyond_budget


def test_workers_that_start_a_trial_at_once_give_way_to_the_lower_numbers():
    """Two workers both saw 3 of 4 places taken and each started a trial: the later number gives way on both."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for _ in range(2):
        study.tell(study.ask(), 0.5)
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    failed = study.ask()  # a failed trial holds no place
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    first, second = study.ask(), study.ask()  # both running now
    assert not beyond_budget(optuna, study, first.number, 4)
    assert beyond_budget(optuna, study, second.number, 4)
    assert not beyond_budget(optuna, study, second.number, 5)  # a bigger budget has room for both
