"""Red team: malicious peers against a victim node (issue 20); see redteam.py."""
