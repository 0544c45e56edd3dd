"""Training backends: one personalized model per composition (see `stages.train`)."""
