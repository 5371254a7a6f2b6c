"""Watching a running installation: Prometheus metrics (`metrics.py`, `state.py`, `exposition.py`) and
searchable logs (`context.py`, `jsonlog.py`, `access.py`). docs/metrics.md lists every metric."""
