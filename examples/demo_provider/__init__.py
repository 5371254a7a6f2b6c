"""A demo SMS provider built on messageservice.provider: `python -m demo_provider --help` (from examples/)."""
