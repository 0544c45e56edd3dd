"""One module per build stage: extract, plan, compose, caption, score, pack."""
