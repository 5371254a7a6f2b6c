"""A self-hosted server that speaks Bitrix24's messageservice REST API."""

__version__ = "0.1.0"
