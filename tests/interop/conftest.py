"""node021.py runs under casty 0.21's interpreter only: importing it here would fail."""

collect_ignore = ["node021.py"]
