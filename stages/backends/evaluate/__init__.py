"""Evaluation backends: generate from each trained model and measure it (see `stages.evaluate`)."""
