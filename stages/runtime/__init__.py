"""What every stage shares: the item cache, the runner and its executors, images and reports
(atomic files and settings live in `base`, which the compiler shares too)."""
