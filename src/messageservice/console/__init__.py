"""The operator console: server-rendered pages behind a login, for admins only."""
