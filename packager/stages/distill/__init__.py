"""``distill``: train a smaller student on the teacher's soft labels (``stage``: the spec and its registration;
``student``: building the student; ``train``: the distillation run; ``search``: the optuna search over its
training knobs; ``augment``: the transfer set's extra texts)."""
