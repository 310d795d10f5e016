"""OAuth 2.0 client credentials: clients, signing keys, tokens, and the scope checks."""
