"""Feature edits (OGC API Features Part 4)."""

routes: list = []
