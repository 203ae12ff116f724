"""The soak run (``make soak``): several node processes, all-to-all traffic, connection kills."""
