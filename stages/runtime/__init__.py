"""What every stage shares: atomic files, the item cache, the executor, settings and reports."""
