"""What every REST call reads (tokens, webhooks, sender lists), held in memory, dropped whenever any process
changes it: see memory.py for the rules, changes.py for the writers' side, freshness.py for the readers'."""
