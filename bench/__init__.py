"""casty benchmarks: ``make bench`` (``python -m bench``)."""
