"""``finetune``: train the model's task head and encoder on the recipe's labelled data (``stage``: the spec and
its registration; ``train``: the training run)."""
