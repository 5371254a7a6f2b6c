"""Bitrix24's OAuth 2.0 server: /oauth/authorize/ and /oauth/token/ (spec 3.8)."""
