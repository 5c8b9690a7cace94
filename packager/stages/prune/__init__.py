"""``prune``: magnitude, movement or structured (heads and FFN units) pruning, with optional recovery training
(``stage``: the spec and its registration; ``algorithm``: the pruning). Structured pruning rebuilds the model as
``packager.pruned_models``: a model type of its own per family that every loader knows."""
