"""The Bitrix24 REST protocol: URL forms, parameters, auth, envelopes, errors, batch."""
