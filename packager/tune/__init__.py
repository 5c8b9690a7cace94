"""``edgepack tune``: an optuna search over the recipe's stage knobs for the fastest bundle within an accuracy
budget (``options``: what the user asks; ``cache``: stage outputs kept between trials and runs; ``records``:
trials and the summary; ``search``: the tuner; ``trial``: how it scores a trial's primary artifact (export,
precision fallback, benchmark); ``run``: the whole tune, ending in a packed winner; ``plot``)."""
