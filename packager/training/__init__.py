"""What every training stage shares: data encoding, Trainer arguments and precision, the distillation loss and
trainer, evaluation and the stage rows. Stages import from here, never from one another."""
