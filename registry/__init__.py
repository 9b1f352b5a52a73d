"""The registry of sensing fronts, their carriers and the city codes that name them.

Its own package because it is its own concern: a ledger with codes, aliases, slots,
deployments, reservations and a lifecycle, and lookups (reuse, duplicates) no other layer
has. Carriers and fronts are also published as ordinary layers, so tiles, features,
history and authorization come from the layer machinery unchanged.
"""
