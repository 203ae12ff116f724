"""Interoperability with a real casty 0.21 node (tests/test_interop_021.py, `make casty021`)."""
