"""The registry of fronts and carriers against a real PostGIS: codes, ledger import,
aliases, reuse lookups checked by brute force, reservations and the lifecycle."""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime

import psycopg
import pytest
from pyproj import Geod

from registry import codes, ledger, lifecycle, reservations, reuse

ALNUM = string.digits + string.ascii_uppercase
GEOD = Geod(ellps="GRS80")  # CGCS2000's ellipsoid; PostGIS measures on the same


@pytest.fixture()
def conn(settings):
    """A transaction rolled back after the test, so tests do not see each other's rows."""
    with psycopg.connect(settings.database_url) as c:
        yield c
        c.rollback()


def test_codes_are_unique_and_never_reused(conn):
    first = codes.issue(conn, "street_lamp", 3)
    again = codes.issue(conn, "street_lamp")
    assert len(set(first + again)) == 4
    serials = [int(c[8:-1]) for c in first + again]
    assert serials == sorted(serials) and serials[-1] == serials[0] + 3
    for c in first + again:
        assert codes.check(c) == c and c.startswith("110000LP")
    assert codes.check(f"{first[0][:6]}-{first[0][6:]}".lower()) == first[0]


def test_check_character_catches_substitutions_and_transpositions(conn):
    code = codes.issue(conn, "camera")[0]
    wrong = 0
    for i, ch in enumerate(code):
        for other in ALNUM:
            if other != ch:
                typo = code[:i] + other + code[i + 1:]
                if codes.SHAPE.match(typo):
                    with pytest.raises(codes.CodeError):
                        codes.check(typo)
                    wrong += 1
    for i in range(len(code) - 1):
        if code[i] != code[i + 1]:
            swapped = code[:i] + code[i + 1] + code[i] + code[i + 2:]
            if codes.SHAPE.match(swapped):
                with pytest.raises(codes.CodeError):
                    codes.check(swapped)
                wrong += 1
    assert wrong > 100
    with pytest.raises(codes.CodeError, match="not a city code"):
        codes.check("lamp 17")


LEDGER = [
    {"kind": "street_lamp", "lon": "24.9400", "lat": "60.1700", "asset_no": "A-1",
     "owner": "lighting", "power_supply": "dusk_to_dawn", "power_w": "60",
     "slots": "3-4:10; 5-6:15"},
    {"kind": "bollard", "lon": "24.94", "lat": "60.17"},
    {"kind": "street_lamp", "lon": "east", "lat": "60.17"},
    {"kind": "smart_pole", "lon": "24.9410", "lat": "60.1705", "asset_no": "S-1",
     "power_supply": "24h", "power_w": "200", "network": "fiber", "ports": "2",
     "slots": "4-5:20;5-6:20;6-7:20", "status": "in_service", "built_at": "2021-05-04"},
    {"kind": "street_lamp", "lon": "24.94001", "lat": "60.17000", "asset_no": "A-99"},
    {"kind": "traffic_pole", "lon": "24.9420", "lat": "60.1710", "slots": "3-8"},
    {"kind": "street_lamp", "lon": "24.9400", "lat": "60.1700", "asset_no": "A-1",
     "owner": "lighting", "power_supply": "24h", "power_w": "80"},
    {"kind": "mast", "lon": "24.95", "lat": "60.18", "status": "broken"},
]


def test_ledger_import_mixes_good_and_bad_rows(conn):
    report = ledger.load(conn, "carrier", "lamps.csv", LEDGER)
    by_row = {o.n: o for o in report.outcomes}
    assert [by_row[n].action for n in range(2, 10)] == [
        "new", "rejected", "rejected", "new", "duplicate", "rejected", "updated", "rejected"]
    assert "bollard" in by_row[3].reason and "east" in by_row[4].reason
    assert by_row[6].code == by_row[2].code and "m away" in by_row[6].reason
    assert "3-8" in by_row[7].reason and "broken" in by_row[9].reason
    assert by_row[8].code == by_row[2].code
    lamp = conn.execute("SELECT power_supply, power_w, ST_X(geom), ST_Y(geom) FROM"
                        " registry.carriers WHERE code = %s", (by_row[2].code,)).fetchone()
    assert lamp == ("24h", 80.0, 24.94, 60.17)  # the re-listed row updated it
    assert ledger.resolve(conn, "asset:S-1") == by_row[5].code
    assert ledger.resolve(conn, by_row[5].code) == by_row[5].code
    assert ledger.resolve(conn, "asset:A-99") is None  # the flagged row loaded nothing
    slots = conn.execute("SELECT slot, height_min, height_max, load_kg FROM registry.slots"
                         " WHERE carrier = %s ORDER BY slot", (by_row[2].code,)).fetchall()
    assert slots == [(1, 3.0, 4.0, 10.0), (2, 5.0, 6.0, 15.0)]
    assert report.summary().endswith("2 new, 1 updated, 1 flagged as duplicates, 4 rejected")


def _world(conn, rng: random.Random, n: int = 300) -> None:
    """n carriers within ~1 km of a centre, with random capacities, fronts and claims."""
    conn.execute("INSERT INTO registry.device_models VALUES"
                 " ('cam-a', 'Acme', 'A1', 'camera', 12, 3, true, 'fiber'),"
                 " ('air-b', 'Bee', 'B2', 'sensor', 4, 1, false, NULL)")
    rows = []
    for i in range(n):
        rows.append({
            "kind": rng.choice(["street_lamp", "smart_pole", "traffic_pole"]),
            "lon": 24.94 + rng.uniform(-0.018, 0.018), "lat": 60.17 + rng.uniform(-0.009, 0.009),
            "asset_no": f"W-{i}", "status": rng.choice(["in_service"] * 4 + ["faulty"]),
            "power_supply": rng.choice(["24h", "dusk_to_dawn", "none"]),
            "power_w": rng.choice([0, 10, 30, 100]), "network": rng.choice([None, "fiber", "lte"]),
            "ports": rng.choice([0, 1, 2]),
            "slots": ";".join(f"{h}-{h + 1.5}:{rng.choice([2, 5, 20])}"
                              for h in rng.sample([2.5, 4, 5.5, 7], rng.randint(0, 3)))})
    report = ledger.load(conn, "carrier", "world", rows)
    new = [o.code for o in report.outcomes if o.action == "new"]
    # Fronts on some slots, reservations on others.
    with_slots = [r[0] for r in conn.execute(
        "SELECT DISTINCT carrier FROM registry.slots WHERE carrier = ANY(%s)", (new,))]
    for i, carrier in enumerate(rng.sample(with_slots, len(with_slots) // 3)):
        lon, lat = conn.execute("SELECT ST_X(geom), ST_Y(geom) FROM registry.carriers"
                                " WHERE code = %s", (carrier,)).fetchone()
        ledger.load(conn, "front", "fronts", [{
            "kind": "camera", "lon": lon, "lat": lat, "model": rng.choice(["cam-a", "air-b"]),
            "serial": f"SN{i}", "carrier": carrier, "slot": 1}])
    for carrier in rng.sample(with_slots, len(with_slots) // 5):
        try:
            reservations.reserve(conn, carrier, 1, "transport", model="air-b")
        except reservations.ReservationError:
            pass  # its slot 1 holds a front


def _brute(conn, lon: float, lat: float, radius: float, needs: reuse.Needs):
    """Every carrier, checked in Python from the raw tables."""
    carriers = conn.execute("SELECT code, status, power_supply, power_w, network, ports,"
                            " ST_X(geom), ST_Y(geom) FROM registry.carriers").fetchall()
    models = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT id, power_w, network FROM registry.device_models")}
    deployed = conn.execute("SELECT d.carrier, d.slot, f.model FROM registry.deployments d"
                            " JOIN registry.fronts f ON f.code = d.front"
                            " WHERE d.valid_to IS NULL").fetchall()
    claimed = conn.execute("SELECT carrier, slot, model FROM registry.reservations"
                           " WHERE status IN ('requested', 'approved')").fetchall()
    slots = conn.execute("SELECT carrier, slot, height_min, height_max, load_kg"
                         " FROM registry.slots").fetchall()
    ok, bad = [], set()
    for code, status, supply, power, network, ports, x, y in carriers:
        _, _, d = GEOD.inv(lon, lat, x, y)
        if d > radius:
            continue
        users = [m for c, _, m in deployed + claimed if c == code]
        free_w = power - sum(models[m][0] for m in users if m)
        free_ports = ports - sum(1 for m in users if m and models[m][1])
        taken = {(c, s) for c, s, _ in deployed + claimed}
        fitting = [s for s in slots if s[0] == code and (code, s[1]) not in taken
                   and s[4] >= needs.load_kg
                   and (needs.height_m is None or s[2] <= needs.height_m <= s[3])]
        fits = (status == "in_service" and (not needs.needs_24h or supply == "24h")
                and free_w >= needs.power_w and fitting
                and (needs.network is None or (network == needs.network and free_ports >= 1)))
        if fits:
            ok.append((d, code, len(fitting)))
        else:
            bad.add(code)
    return [c for _, c, _ in sorted(ok)], {c: n for _, c, n in ok}, bad


def test_reuse_lookup_matches_brute_force(conn):
    rng = random.Random(11)
    _world(conn, rng)
    cases = [(0, reuse.Needs()), (1, reuse.needs_of_model(conn, "cam-a", height_m=4.5)),
             (2, reuse.needs_of_model(conn, "air-b")),
             (3, reuse.Needs(power_w=20, needs_24h=True, height_m=6.0, load_kg=5))]
    found_any = False
    for i, needs in cases:
        lon, lat = 24.94 + rng.uniform(-0.01, 0.01), 60.17 + rng.uniform(-0.005, 0.005)
        radius = [150.0, 300.0, 500.0, 800.0][i]
        got = reuse.lookup(conn, {"type": "Point", "coordinates": [lon, lat]}, radius, needs)
        order, free, excluded = _brute(conn, lon, lat, radius, needs)
        assert [c["code"] for c in got["candidates"]] == order, needs
        assert {c["code"]: len(c["free_slots"]) for c in got["candidates"]} == free
        assert {e["code"] for e in got["excluded"]} == excluded
        assert all(e["reasons"] for e in got["excluded"])
        dists = [c["distance_m"] for c in got["candidates"]]
        assert dists == sorted(dists) and all(d <= radius for d in dists)
        found_any = found_any or bool(order and excluded)
    assert found_any


def test_reservation_conflicts_and_decisions(conn):
    report = ledger.load(conn, "carrier", "poles", [
        {"kind": "smart_pole", "lon": 24.93, "lat": 60.16, "owner": "transport",
         "slots": "4-5:20"}])
    pole = report.outcomes[0].code
    first = reservations.reserve(conn, pole, 1, "police", note="camera for the crossing")
    with pytest.raises(reservations.ReservationError, match="already claimed by police"):
        reservations.reserve(conn, pole, 1, "environment")
    with pytest.raises(reservations.ReservationError, match="owner"):
        reservations.decide(conn, first, True, by="police")
    assert reservations.decide(conn, first, False, by="transport") == "refused"
    # A refused claim frees the slot for the next department.
    second = reservations.reserve(conn, pole, 1, "environment")
    assert reservations.decide(conn, second, True, by="transport") == "approved"
    site = {"type": "Point", "coordinates": [24.93, 60.16]}
    got = reuse.lookup(conn, site, 50, reuse.Needs())
    assert got["candidates"] == [] and got["excluded"][0]["reasons"] == ["no free slot"]


def test_state_of_a_pole_as_of_a_past_date(conn):
    report = ledger.load(conn, "carrier", "poles", [
        {"kind": "smart_pole", "lon": 24.92, "lat": 60.15, "slots": "4-5:20;5-6:20",
         "built_at": "2019-03-01"}])
    pole = report.outcomes[0].code
    t = [datetime(y, 1, 1, tzinfo=UTC) for y in (2020, 2021, 2022, 2023)]
    cam = ledger.load(conn, "front", "cams", [
        {"kind": "camera", "lon": 24.92, "lat": 60.15, "carrier": pole, "slot": 2,
         "serial": "X1"}], produced=t[0]).outcomes[0]
    assert cam.action == "new", cam.reason
    lifecycle.record(conn, pole, "fault", actual_at=t[1], operator="crew 7")
    lifecycle.record(conn, pole, "repair", actual_at=t[2])
    conn.execute("UPDATE registry.deployments SET valid_to = %s WHERE front = %s",
                 (t[3], cam.code))
    lifecycle.record(conn, pole, "retirement", actual_at=t[3])
    assert lifecycle.state_at(conn, pole, datetime(2018, 6, 1, tzinfo=UTC))["state"] == "unknown"
    s2019 = lifecycle.state_at(conn, pole, datetime(2019, 6, 1, tzinfo=UTC))
    assert s2019["state"] == "in_service" and s2019["fronts"] == []
    s2021 = lifecycle.state_at(conn, pole, datetime(2021, 6, 1, tzinfo=UTC))
    assert s2021["state"] == "faulty" and s2021["fronts"] == [cam.code]
    assert lifecycle.state_at(conn, pole, datetime(2022, 6, 1, tzinfo=UTC))["state"] == \
        "in_service"
    now = lifecycle.state_at(conn, pole, datetime(2024, 1, 1, tzinfo=UTC))
    assert now["state"] == "retired" and now["fronts"] == []
    assert conn.execute("SELECT status FROM registry.carriers WHERE code = %s",
                        (pole,)).fetchone()[0] == "retired"
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("DELETE FROM registry.events WHERE code = %s", (pole,))


def test_codes_and_reuse_over_http_obey_the_layers_access(http, settings):
    """Published as layers, the registry answers over HTTP; withdrawn from the public, its
    codes and lookups are missing, like any layer the caller may not read."""
    import asyncio

    from access import admin
    from access.admin import Actor
    from ingest.meta import LayerMeta
    from registry.publish import publish

    with psycopg.connect(settings.database_url) as c:
        poles = ledger.load(c, "carrier", "city.csv", [
            {"kind": "smart_pole", "lon": 25.50, "lat": 60.40, "asset_no": "H-1",
             "power_supply": "24h", "power_w": 100, "network": "fiber", "ports": 2,
             "slots": "4-5:20;6-7:20", "owner": "transport"},
            {"kind": "street_lamp", "lon": 25.501, "lat": 60.40, "asset_no": "H-2",
             "power_supply": "dusk_to_dawn", "slots": "3-4:10"}])
        pole, lamp = (o.code for o in poles.outcomes)
        cam = ledger.load(c, "front", "cams.csv", [
            {"kind": "camera", "lon": 25.50, "lat": 60.40, "carrier": "asset:H-1", "slot": 2,
             "serial": "CAM-77", "direction": 90, "fov": 60, "range_m": 40}]).outcomes[0]
        assert cam.action == "new", cam.reason
        c.commit()
    summaries = publish(settings, LayerMeta(level="public", department="Transport"))
    assert set(summaries) == {"carriers", "fronts"}

    doc = http.get(f"/codes/{pole}").json()
    assert doc["entity"] == "carrier" and doc["aliases"] == ["asset:H-1"]
    assert doc["position"]["coordinates"] == [25.5, 60.4]
    assert [s["front"] for s in doc["slots"]] == [None, cam.code]
    assert http.get("/codes/serial:CAM-77").json()["mounted_on"] == {"carrier": pole, "slot": 2}
    typo = pole[:-2] + pole[-1] + pole[-2]
    r = http.get(f"/codes/{typo}")
    assert r.status_code == 400 and "check character" in r.json()["detail"]
    assert http.get("/codes/" + codes.make("110000", "LP", 9_999_999, 7)).status_code == 404
    # A layer like any other: its features carry the code as id.
    item = http.get(f"/collections/carriers/items/{pole}")
    assert item.status_code == 200 and item.json()["properties"]["slots_taken"] == 1

    r = http.get("/registry/reuse", params={"lon": 25.5005, "lat": 60.40, "radius": 200,
                                            "power_w": 10, "needs_24h": "true",
                                            "network": "fiber", "height": 4.5})
    assert r.status_code == 200
    got = r.json()
    assert [c["code"] for c in got["candidates"]] == [pole]
    assert got["candidates"][0]["free_slots"] == [
        {"slot": 1, "height_min": 4.0, "height_max": 5.0, "load_kg": 20.0}]
    assert [e["code"] for e in got["excluded"]] == [lamp]
    assert http.get("/registry/reuse", params={"lon": 25.5, "lat": 60.4,
                                               "radius": 99999}).status_code == 400

    async def withdraw() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            for layer in ("carriers", "fronts"):
                await admin.classify(conn, Actor("test"), settings.levels, layer=layer,
                                     level="internal")

    asyncio.run(withdraw())
    for path in (f"/codes/{pole}", "/codes/asset:H-1", f"/codes/{cam.code}"):
        assert http.get(path).status_code == 404, path
    assert http.get("/registry/reuse", params={"lon": 25.5, "lat": 60.4}).status_code == 404


def test_cli_loads_an_xlsx_ledger_with_a_column_mapping(settings, tmp_path, capsys,
                                                        monkeypatch):
    import pandas as pd
    import pyogrio

    from onemap.cli import main

    monkeypatch.setenv("ONEMAP_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ONEMAP_DATA_DIR", str(settings.data_dir))
    path = tmp_path / "lamps.xlsx"
    pyogrio.write_dataframe(pd.DataFrame({
        "类型": ["street_lamp", "street_lamp", "pole?"],
        "经度": [25.60, 25.601, 25.602], "纬度": [60.50, 60.50, 60.50],
        "资产编号": ["X-1", "X-2", "X-3"], "槽位": ["3-4:10", "nine", "3-4:10"]}),
        path, driver="XLSX")
    maps = ["kind=类型", "lon=经度", "lat=纬度", "asset_no=资产编号", "slots=槽位"]
    argv = ["ingest", "ledger", str(path), "--entity", "carrier", "--level", "public"]
    for m in maps:
        argv += ["--map", m]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 rows: 1 new" in out and "2 rejected" in out
    assert "row 3: rejected: slot 'nine'" in out and "row 4: rejected: kind 'pole?'" in out
    assert "published carriers" in out
    with psycopg.connect(settings.database_url) as c:
        assert ledger.resolve(c, "asset:X-1") is not None
    assert main(["ingest", "ledger", str(path), "--entity", "carrier", "--map",
                 "kind=kind"]) == 2
    assert "no column kind" in capsys.readouterr().err
