"""Migrations on data written before them: free department names become references."""

from __future__ import annotations

import psycopg

from layers.migrate import _migrations


def test_free_department_names_are_mapped_to_departments(cluster):
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS premigration")
        admin.execute("CREATE DATABASE premigration")
    url = cluster.url.rsplit("/", 1)[0] + "/premigration"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.execute("CREATE SCHEMA onemap")
        steps = _migrations()
        for version, _, text in steps:
            if version < 9:
                conn.execute(text)
        conn.execute("INSERT INTO onemap.departments (id, name) VALUES"
                     " ('transport', 'Transport Bureau'), ('housing', 'Housing')")
        for layer_id, dept in (("a", "Urban Lighting"), ("b", "transport"),
                               ("c", "HOUSING"), ("d", "交通委"), ("e", None)):
            conn.execute("INSERT INTO onemap.layers (id, title, department) VALUES (%s, %s, %s)",
                         (layer_id, layer_id, dept))
        nine = next(text for version, _, text in steps if version == 9)
        conn.execute(nine)
        got = dict(conn.execute("SELECT id, department FROM onemap.layers").fetchall())
        names = dict(conn.execute("SELECT id, name FROM onemap.departments").fetchall())
        assert got["a"] == "urban-lighting" and names["urban-lighting"] == "Urban Lighting"
        assert got["b"] == "transport" and got["c"] == "housing" and got["e"] is None
        assert got["d"].startswith("dept-") and names[got["d"]] == "交通委"
        # From now on an owner must be a department.
        try:
            conn.execute("UPDATE onemap.layers SET department = 'nobody' WHERE id = 'a'")
            raise AssertionError("a free name was accepted")
        except psycopg.errors.ForeignKeyViolation:
            pass
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute("DROP DATABASE premigration")
