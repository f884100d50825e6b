"""The domain: users, identities, devices and events. Plain Python: no HTTP, no SQL."""
