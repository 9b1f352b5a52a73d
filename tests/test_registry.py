"""The registry of fronts and carriers against a real PostGIS: codes, ledger import,
aliases, reuse lookups checked by brute force, reservations and the lifecycle."""

from __future__ import annotations

import math
import random
import string
from datetime import UTC, datetime

import psycopg
import pytest
from pyproj import Geod

from layers.errors import Conflict, Forbidden
from layers.restrict import Restriction
from registry import codes, ledger, lifecycle, reservations, reuse
from registry.scope import Scope
from tests.conftest import department_keys, ensure_departments

ALNUM = string.digits + string.ascii_uppercase
GEOD = Geod(ellps="GRS80")  # CGCS2000's ellipsoid; PostGIS measures on the same


@pytest.fixture(scope="module", autouse=True)
def owners(settings) -> None:
    """The departments that own this module's poles: owners are departments."""
    ensure_departments(settings, {"lighting": "Urban Lighting", "transport": "Transport",
                                  "police": "Police", "environment": "Environment"})


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
        except Conflict:
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
    # An area-limited caller: only carriers in the west half of the site's circle.
    area = conn.execute(
        "INSERT INTO onemap.areas (name, geom) VALUES ('west', ST_Multi(ST_MakeEnvelope("
        "24.0, 60.0, 24.94, 61.0, 4326))) RETURNING id").fetchone()[0]
    site = {"type": "Point", "coordinates": [24.94, 60.17]}
    got = reuse.lookup(conn, site, 800.0, reuse.Needs(),
                       Scope(restriction=Restriction(area_id=area)))
    everything = reuse.lookup(conn, site, 800.0, reuse.Needs())
    codes_in = {c["code"] for c in got["candidates"] + got["excluded"]}
    west = {c["code"] for c in everything["candidates"] + everything["excluded"]
            if conn.execute("SELECT ST_X(geom) <= 24.94 FROM registry.carriers WHERE code = %s",
                            (c["code"],)).fetchone()[0]}
    assert codes_in == west and 0 < len(west) < len(everything["candidates"]
                                                    + everything["excluded"])


def test_reservation_conflicts_and_decisions(conn):
    report = ledger.load(conn, "carrier", "poles", [
        {"kind": "smart_pole", "lon": 24.93, "lat": 60.16, "owner": "transport",
         "slots": "4-5:20"}])
    pole = report.outcomes[0].code
    first = reservations.reserve(conn, pole, 1, "police", note="camera for the crossing")
    with pytest.raises(Conflict, match="already claimed by police"):
        reservations.reserve(conn, pole, 1, "environment")
    with pytest.raises(Forbidden, match="owner"):
        reservations.decide(conn, first, True, by="police")
    assert reservations.decide(conn, first, False, by="transport") == "refused"
    # A refused claim frees the slot for the next department.
    second = reservations.reserve(conn, pole, 1, "environment")
    assert reservations.decide(conn, second, True, by="transport") == "approved"
    site = {"type": "Point", "coordinates": [24.93, 60.16]}
    got = reuse.lookup(conn, site, 50, reuse.Needs())
    assert got["candidates"] == [] and got["excluded"][0]["reasons"] == ["no free slot"]


def test_claims_are_withdrawn_limited_and_lapse(conn):
    report = ledger.load(conn, "carrier", "poles", [
        {"kind": "smart_pole", "lon": 24.95, "lat": 60.17, "owner": "Transport",
         "slots": "3-4:10;5-6:10;7-8:10"},
        {"kind": "smart_pole", "lon": 24.96, "lat": 60.17, "owner": "Ministry of Nowhere"}])
    pole = report.outcomes[0].code
    # Owners are departments: a name resolves to its id, a free name is a rejected row.
    assert conn.execute("SELECT owner FROM registry.carriers WHERE code = %s",
                        (pole,)).fetchone()[0] == "transport"
    assert report.outcomes[1].action == "rejected"
    assert "no department 'Ministry of Nowhere'" in report.outcomes[1].reason
    r1 = reservations.reserve(conn, pole, 1, "police", max_claims=2)
    r2 = reservations.reserve(conn, pole, 2, "police", max_claims=2)
    with pytest.raises(Conflict, match="holds 2 claims"):
        reservations.reserve(conn, pole, 3, "police", max_claims=2)
    with pytest.raises(Forbidden, match="requesting department"):
        reservations.cancel(conn, r1, "environment")
    assert reservations.cancel(conn, r1, "police") == "cancelled"
    reservations.reserve(conn, pole, 3, "police", max_claims=2)  # room for one again
    # A claim left undecided past its time lapses, and its slot is free again.
    conn.execute("UPDATE registry.reservations SET requested_at = now() - interval '73 hours'"
                 " WHERE id = %s", (r2,))
    again = reservations.reserve(conn, pole, 2, "environment")
    assert conn.execute("SELECT status FROM registry.reservations WHERE id = %s",
                        (r2,)).fetchone()[0] == "expired"
    with pytest.raises(Conflict, match="already expired"):
        reservations.decide(conn, r2, True, by="transport")
    assert reservations.decide(conn, again, True, by="transport") == "approved"


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


def _withdraw(settings) -> None:
    """The registry's layers made internal: no longer for anonymous callers."""
    import asyncio

    from access import admin
    from access.admin import Actor

    async def classify() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as c:
            for layer in ("carriers", "fronts"):
                await admin.classify(c, Actor("test"), settings.levels, layer=layer,
                                     level="internal")

    asyncio.run(classify())


def test_codes_and_reuse_over_http_obey_the_layers_access(http, settings):
    """Published as layers, the registry answers over HTTP; withdrawn from the public, its
    codes and lookups are missing, like any layer the caller may not read."""

    from layers.meta import LayerMeta
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

    _withdraw(settings)
    for path in (f"/codes/{pole}", "/codes/asset:H-1", f"/codes/{cam.code}"):
        assert http.get(path).status_code == 404, path
    assert http.get("/registry/reuse", params={"lon": 25.5, "lat": 60.4}).status_code == 404
    _grants_hold_in_lookups(http, settings, pole, lamp, cam.code)


def _grants_hold_in_lookups(http, settings, pole: str, lamp: str, cam: str) -> None:
    """A grant's row filter, masks and hidden fields hold in the registry's own lookups as
    they do in tiles and features."""
    import asyncio

    from access import admin
    from access.admin import Actor

    keys = department_keys(settings, {"reg_poles": "reg_pole_dept", "reg_np": "reg_np_dept",
                                      "reg_nf": "reg_nf_dept", "reg_ns": "reg_ns_dept",
                                      "reg_no": "reg_no_dept"})
    with psycopg.connect(settings.database_url) as c:
        lifecycle.record(c, pole, "inspection", actual_at=datetime(2024, 3, 1, tzinfo=UTC),
                         operator="night crew", note="door seal worn")
        c.commit()

    async def grant() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as c:
            a, levels = Actor("test"), settings.levels
            await admin.grant(c, a, levels, to="department:reg_pole_dept", layers="carriers",
                              filter="kind = 'smart_pole'", masked={"owner": "full"})
            await admin.grant(c, a, levels, to="department:reg_np_dept", layers="carriers",
                              hidden=["power_w"])
            await admin.grant(c, a, levels, to="department:reg_nf_dept", layers="fronts",
                              hidden=["fov"])
            await admin.grant(c, a, levels, to="department:reg_nf_dept", layers="carriers")
            await admin.grant(c, a, levels, to="department:reg_ns_dept", layers="carriers",
                              hidden=["status"])
            await admin.grant(c, a, levels, to="department:reg_no_dept", layers="carriers",
                              hidden=["operator"])
            await admin.grant(c, a, levels, to="department:reg_no_dept", layers="fronts",
                              read=False)

    asyncio.run(grant())

    def get(who: str, path: str, **params):
        return http.get(path, params=params, headers={"Authorization": f"Bearer {keys[who]}"})

    doc = get("reg_poles", f"/codes/{pole}").json()
    assert doc["code"] == pole and doc["owner"] not in (None, "transport")
    assert get("reg_poles", f"/codes/{lamp}").status_code == 404
    got = get("reg_poles", "/registry/reuse", lon=25.5005, lat=60.40, radius=200).json()
    assert [c["code"] for c in got["candidates"] + got["excluded"]] == [pole]
    everything = get("reg_nf", "/registry/reuse", lon=25.5005, lat=60.40, radius=200).json()
    assert {c["code"] for c in everything["candidates"] + everything["excluded"]} == {
        pole, lamp}

    r = get("reg_np", "/registry/reuse", lon=25.5005, lat=60.40, radius=200)
    assert r.status_code == 403 and "power_w" in r.json()["detail"]
    assert "power_w" not in get("reg_np", f"/codes/{pole}").json()
    r = get("reg_nf", "/registry/duplicates", lon=25.5, lat=60.4, kind="camera")
    assert r.status_code == 403 and "fov" in r.json()["detail"]
    assert "fov" not in get("reg_nf", f"/codes/{cam}").json()
    assert get("reg_nf", "/registry/coverage").status_code == 403

    # History under the same field rules: a hidden state takes the ledger with it (each
    # event tells a state); a hidden operator leaves the events without one.
    full = get("reg_nf", f"/codes/{pole}/history").json()
    assert full["state"] and any(e["operator"] == "night crew" for e in full["events"])
    hidden_state = get("reg_ns", f"/codes/{pole}/history")
    assert hidden_state.status_code == 200
    assert not {"state", "last_event", "events"} & set(hidden_state.json())
    no_operator = get("reg_no", f"/codes/{pole}/history").json()
    assert no_operator["events"] and all("operator" not in e for e in no_operator["events"])
    assert any(e["note"] == "door seal worn" for e in no_operator["events"])

    # A caller denied fronts learns nothing of a front's code: the answer is the one for a
    # code that never existed, word for word but for the code.
    never = codes.make("110000", "CM", 9_999_998, 7)
    denied, missing = get("reg_no", f"/codes/{cam}"), get("reg_no", f"/codes/{never}")
    assert denied.status_code == missing.status_code == 404
    assert denied.json()["detail"].replace(cam, "?") == missing.json()["detail"].replace(
        never, "?")


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


SAMPLE_PBF = "data/samples/helsinki-centre.osm.pbf"


def test_osm_extract_loads_once_and_updates_by_osm_id(conn):
    from registry import osm

    assert osm.tags({"highway": "street_lamp", "other_tags":
                     '"height"=>"8 m","name"=>"say \\"hi\\"","power"=>"pole"'}) == {
        "highway": "street_lamp", "height": "8 m", "name": 'say "hi"', "power": "pole"}
    carriers = osm.read(SAMPLE_PBF, "carrier")
    kinds = {k: sum(1 for r in carriers if r["kind"] == k) for k in
             ("street_lamp", "traffic_pole", "mast", "power_pole")}
    assert kinds["street_lamp"] == 586 and kinds["traffic_pole"] == 135 and kinds["mast"] == 1
    first = ledger.load(conn, "carrier", "osm", carriers, first_row=1)
    again = ledger.load(conn, "carrier", "osm", carriers, first_row=1)
    assert first.count("new") + first.count("duplicate") == len(carriers)
    assert 0 < first.count("duplicate") < 10  # OSM's own doubles, a few metres apart
    assert again.count("updated") == first.count("new") and again.count("new") == 0
    lamp = next(r for r in carriers if r["kind"] == "street_lamp")
    code = ledger.resolve(conn, f"osm:{lamp['osm_id']}")
    assert conn.execute("SELECT kind, ST_X(geom), ST_Y(geom) FROM registry.carriers"
                        " WHERE code = %s", (code,)).fetchone() == (
        "street_lamp", lamp["lon"], lamp["lat"])
    cams = ledger.load(conn, "front", "osm", osm.read(SAMPLE_PBF, "front"), first_row=1)
    assert cams.count("new") > 200 and cams.count("rejected") == 0
    # The lamp that OSM also tags as a camera: the camera is its own front, not an update
    # of the lamp through the shared OSM id.
    assert cams.count("updated") == 0


def _cameras(conn, rng: random.Random, n: int) -> list[tuple]:
    rows = [{"kind": "camera", "lon": 24.90 + rng.uniform(-0.004, 0.004),
             "lat": 60.20 + rng.uniform(-0.002, 0.002), "serial": f"FOV-{i}",
             "direction": rng.randrange(0, 360), "fov": rng.choice([30, 60, 90, 200, 360]),
             "range_m": rng.choice([20, 50, 80, 150])} for i in range(n)]
    report = ledger.load(conn, "front", "cams", rows)
    assert report.count("new") >= n - 3
    return conn.execute("SELECT code, ST_X(geom), ST_Y(geom), direction, fov, range_m"
                        " FROM registry.fronts WHERE kind = 'camera' AND code IN"
                        " (SELECT code FROM registry.aliases WHERE value LIKE 'FOV-%%')"
                        ).fetchall()


def _sees(cam: tuple, lon: float, lat: float) -> bool | None:
    """Whether a camera sees a point, on the ellipsoid; None too near the sector's edge to
    call (floating point, not a disagreement worth failing on)."""
    _, x, y, direction, fov, rng = cam
    az, _, d = GEOD.inv(x, y, lon, lat)
    off = abs((az - direction + 180) % 360 - 180)
    if abs(d - rng) < 0.01 or (fov < 360 and abs(off - fov / 2) < 0.01):
        return None
    return d <= rng and (fov >= 360 or off <= fov / 2)


def test_field_of_view_duplicate_check_matches_geodesy(conn):
    from registry import coverage

    rng = random.Random(5)
    cams = _cameras(conn, rng, 120)
    checked = seen_any = 0
    for _ in range(40):
        lon, lat = 24.90 + rng.uniform(-0.004, 0.004), 60.20 + rng.uniform(-0.002, 0.002)
        got = coverage.check_front(conn, {"type": "Point", "coordinates": [lon, lat]},
                                   "camera", radius_m=30)
        watched = {w["code"] for w in got["watched_by"]}
        for cam in cams:
            sees = _sees(cam, lon, lat)
            if sees is not None:
                assert (cam[0] in watched) == sees, (cam, lon, lat)
                checked += 1
        near = {c["code"] for c in got["same_kind_nearby"]}
        assert near == {c[0] for c in cams if GEOD.inv(c[1], c[2], lon, lat)[2] <= 30}
        assert got["duplicate"] == bool(near or watched)
        seen_any += bool(watched)
    assert checked > 4000 and seen_any > 10
    # A proposed view: the share already watched, against a sampled estimate.
    site, view = [24.90, 60.20], {"direction": 45.0, "fov": 90.0, "range": 60.0}
    got = coverage.check_front(conn, {"type": "Point", "coordinates": site}, "camera",
                               view=view)
    samples = []
    for _ in range(2000):
        az = view["direction"] - 45 + 90 * rng.random()
        d = 60 * (rng.random() ** 0.5)  # uniform over the sector's area
        lon, lat, _ = GEOD.fwd(site[0], site[1], az, d)
        samples.append(any(_sees(c, lon, lat) for c in cams))
    assert abs(got["view_already_watched"] - sum(samples) / len(samples)) < 0.05
    with pytest.raises(ValueError, match="fov"):
        coverage.view_params(10, 0, 50)


def test_coverage_per_area_and_road_share(conn, settings, tmp_path):
    """Fronts by kind per polygon and the share of roads within a camera's view, checked
    against shapely in a local metric projection."""
    import json

    import numpy as np
    import shapely
    from pyproj import Transformer
    from shapely import geometry, ops

    from ingest.vector import ingest_vector
    from layers.catalog import get_layer
    from layers.meta import LayerMeta
    from layers.restrict import NONE
    from registry import coverage

    x0, y0 = 24.80, 60.25
    west = geometry.box(x0 - 0.004, y0 - 0.002, x0, y0 + 0.002)
    east = geometry.box(x0, y0 - 0.002, x0 + 0.004, y0 + 0.002)
    roads = [geometry.LineString([(x0 - 0.004, y0 + k * 0.0005), (x0 + 0.004, y0 + k * 0.0005)])
             for k in range(-3, 4)] + [geometry.LineString([(x0 + 0.001, y0 - 0.002),
                                                            (x0 + 0.001, y0 + 0.002)])]
    for name, shapes in (("cov_areas", [("west", west), ("east", east)]),
                         ("cov_roads", [(str(i), r) for i, r in enumerate(roads)])):
        path = tmp_path / f"{name}.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"name": n}, "geometry": geometry.mapping(g)}
            for n, g in shapes]}))
        ingest_vector(path, name, key="name", settings=settings, progress=False,
                      meta=LayerMeta(level="public"))
    rng = random.Random(8)
    rows = [{"kind": "camera", "lon": x0 + rng.uniform(-0.0035, 0.0035),
             "lat": y0 + rng.uniform(-0.0018, 0.0018), "serial": f"COV-{i}",
             "direction": rng.randrange(0, 360), "fov": rng.choice([60, 90, 360]),
             "range_m": rng.choice([30, 60])} for i in range(25)]
    rows += [{"kind": "sensor", "lon": x0 + 0.002, "lat": y0 + 0.001 * k, "serial": f"S-{k}"}
             for k in (-1, 0, 1)]
    report = ledger.load(conn, "front", "cov", rows)
    assert report.count("rejected") == 0
    q, p = coverage.coverage_query(get_layer(conn, "cov_areas"), "name",
                                   get_layer(conn, "cov_roads"), NONE, NONE)
    got = {r["area"]: r for r in coverage.coverage_rows(conn.execute(q, p).fetchall())}

    to_local = Transformer.from_crs(
        "EPSG:4326", f"+proj=aeqd +lat_0={y0} +lon_0={x0} +ellps=GRS80", always_xy=True)

    def local(*xy):
        if len(xy) == 2:
            return to_local.transform(*xy)
        return shapely.transform(xy[0], lambda c: np.column_stack(
            to_local.transform(c[:, 0], c[:, 1])))
    views = []
    for r in rows:
        if r["kind"] == "camera":
            cx, cy = local(r["lon"], r["lat"])
            if r["fov"] == 360:
                views.append(geometry.Point(cx, cy).buffer(r["range_m"], 64))
            else:
                arc = [(cx + r["range_m"] * math.sin(math.radians(a)),
                        cy + r["range_m"] * math.cos(math.radians(a)))
                       for a in [r["direction"] - r["fov"] / 2 + r["fov"] * i / 128
                                 for i in range(129)]]
                views.append(geometry.Polygon([(cx, cy), *arc]))
    seen = ops.unary_union(views)
    for name, box in (("west", west), ("east", east)):
        area = local(box)
        inside = ops.unary_union([local(r) for r in roads]).intersection(area)
        expect = inside.intersection(seen).length / inside.length
        row = got[name]
        assert abs(row["road_m"] - inside.length) / inside.length < 0.005, row
        assert abs(row["road_watched_share"] - expect) < 0.02, (row, expect)
        want = {}
        for r in rows:
            if box.contains(geometry.Point(r["lon"], r["lat"])):
                want[r["kind"]] = want.get(r["kind"], 0) + 1
        assert row["fronts"] == want
    assert 0 < got["west"]["road_watched_share"] < 1


def test_registry_writes_and_checks_over_http(http, settings, sample_layers):
    """Reservations, decisions and lifecycle events over HTTP, each under the caller's
    department and rights; a line site for reuse; duplicates and coverage."""
    import asyncio

    from access import admin
    from access.admin import Actor
    from registry.publish import publish

    keys = department_keys(settings, {"reg_roads": "reg_roads", "reg_police": "reg_police"})

    async def grant() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as c:
            for layer in ("carriers", "fronts"):
                await admin.grant(c, Actor("test"), settings.levels,
                                  to="department:reg_police", layers=layer)
                await admin.grant(c, Actor("test"), settings.levels,
                                  to="department:reg_roads", layers=layer, publish=True)

    asyncio.run(grant())
    with psycopg.connect(settings.database_url) as c:
        pole = ledger.load(c, "carrier", "poles.csv", [
            {"kind": "smart_pole", "lon": 26.0, "lat": 60.5, "owner": "reg_roads",
             "power_supply": "24h", "power_w": 100, "slots": "4-5:20",
             "built_at": "2020-05-01"}]).outcomes[0].code
        cam = ledger.load(c, "front", "cams.csv", [
            {"kind": "camera", "lon": 26.0, "lat": 60.5, "serial": "HTTP-CAM",
             "direction": 0, "fov": 90, "range_m": 100}]).outcomes[0].code
        found = ledger.load(c, "model", "models.csv", [
            {"id": "http-cam", "category": "camera", "power_w": "12", "needs_24h": "yes",
             "network": "ethernet"},
            {"id": "odd", "category": "sensor", "needs_24h": "maybe"},
            {"id": "", "category": "sensor"}])
        assert [o.action for o in found.outcomes] == ["new", "rejected", "rejected"]
        assert "maybe" in found.outcomes[1].reason and "id is empty" in found.outcomes[2].reason
        c.commit()
    publish(settings)

    _withdraw(settings)
    roads, police = ({"Authorization": f"Bearer {keys[d]}"} for d in ("reg_roads", "reg_police"))

    claim = {"carrier": pole, "slot": 1, "note": "camera for the junction"}
    assert http.post("/registry/reservations", json=claim).status_code == 401
    r = http.post("/registry/reservations", json=claim, headers=police)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    r = http.post("/registry/reservations", json=claim, headers=roads)
    assert r.status_code == 409 and "reg_police" in r.json()["detail"]
    assert http.post("/registry/reservations", json={**claim, "slot": "one"},
                     headers=police).status_code == 400
    r = http.post(f"/registry/reservations/{rid}", json={"decision": "approve"}, headers=police)
    assert r.status_code == 403 and "owner" in r.json()["detail"]
    r = http.post(f"/registry/reservations/{rid}", json={"decision": "approve"}, headers=roads)
    assert r.status_code == 200 and r.json()["status"] == "approved"

    line = {"type": "LineString", "coordinates": [[25.999, 60.501], [26.001, 60.501]]}
    r = http.post("/registry/reuse", json={"site": line, "radius": 300}, headers=police)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["candidates"] == [] and got["excluded"][0]["code"] == pole
    assert got["excluded"][0]["reasons"] == ["no free slot"]  # the approved claim holds it
    # The requester withdraws its claim (no one else may), and the slot is free again.
    r = http.delete(f"/registry/reservations/{rid}", headers=roads)
    assert r.status_code == 403 and "requesting department" in r.json()["detail"]
    r = http.delete(f"/registry/reservations/{rid}", headers=police)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    freed = http.post("/registry/reuse", json={"site": line, "radius": 300},
                      headers=police).json()
    assert all("no free slot" not in e["reasons"] for e in freed["excluded"])
    r = http.post("/registry/reservations", json=claim, headers=police)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    r = http.post(f"/registry/reservations/{rid}", json={"decision": "approve"}, headers=roads)
    assert r.status_code == 200
    assert abs(got["excluded"][0]["distance_m"] - 111.3) < 1  # to the line, not its ends
    bad = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    r = http.post("/registry/reuse", json={"site": bad}, headers=police)
    assert r.status_code == 400 and "valid" in r.json()["detail"]

    near = {"lon": 26.0, "lat": 60.5004, "kind": "camera", "radius": 100,
            "direction": 0, "fov": 60, "range": 40}
    r = http.get("/registry/duplicates", params=near, headers=police)
    assert r.status_code == 200, r.text
    dup = r.json()
    assert [w["code"] for w in dup["watched_by"]] == [cam] and dup["duplicate"]
    assert dup["view_already_watched"] > 0.99
    behind = {**near, "lat": 60.4996}
    dup = http.get("/registry/duplicates", params=behind, headers=police).json()
    assert dup["watched_by"] == [] and [c["code"] for c in dup["same_kind_nearby"]] == [cam]
    assert http.get("/registry/duplicates", params=near).status_code == 404  # anonymous

    r = http.get("/registry/models", headers=police)
    assert {"id": "http-cam", "maker": None, "model": None, "category": "camera",
            "power_w": 12, "weight_kg": 0, "needs_24h": True,
            "network": "ethernet"} in r.json()["models"]
    assert http.get("/registry/models").status_code == 404
    page = http.get("/planner")
    assert page.status_code == 200 and "Pole planner" in page.text

    r = http.get("/registry/coverage", params={"roads": "roads"}, headers=police)
    assert r.status_code == 200 and r.json()["rows"][0]["area"] == "all"
    assert r.json()["rows"][0]["fronts"]["camera"] >= 1
    r = http.get("/registry/coverage", params={"areas": "roads"}, headers=police)
    assert r.status_code == 400 and "not polygons" in r.json()["detail"]

    event = {"event": "fault", "actual_at": "2024-03-01T08:00:00Z", "note": "lamp out"}
    assert http.post(f"/codes/{pole}/events", json=event,
                     headers=police).status_code == 403
    versions = "SELECT _fid, count(*) FROM onemap_data.carriers GROUP BY _fid"
    with psycopg.connect(settings.database_url) as c:
        before = dict(c.execute(versions).fetchall())
    r = http.post(f"/codes/{pole}/events", json=event, headers=roads)
    assert r.status_code == 201, r.text
    assert http.get(f"/collections/carriers/items/{pole}",
                    headers=police).json()["properties"]["status"] == "faulty"
    # The event's entity alone gets a new version; the rest of the layer is untouched.
    with psycopg.connect(settings.database_url) as c:
        after = dict(c.execute(versions).fetchall())
    assert after == {**before, pole: before[pole] + 1} and len(before) > 1
    # The same state again (a second fault) changes nothing in the layer.
    later = {**event, "actual_at": "2024-03-02T08:00:00Z"}
    assert http.post(f"/codes/{pole}/events", json=later, headers=roads).status_code == 201
    with psycopg.connect(settings.database_url) as c:
        assert dict(c.execute(versions).fetchall()) == after
    past = http.get(f"/codes/{pole}/history", params={"at": "2023-01-01"}, headers=police)
    assert past.status_code == 200 and past.json()["state"] == "in_service"
    assert [e["event"] for e in past.json()["events"]] == ["installation", "fault", "fault"]
    assert http.get(f"/codes/{pole}/history", headers=police).json()["state"] == "faulty"
    assert http.get(f"/codes/{pole}/history").status_code == 404
    # The whole register merged again after the event: the edited feature is what the full
    # publication gives too (one field list, one hash), so nothing changes and the catalog
    # version stays; the run is in the ingest log with its source table.
    with psycopg.connect(settings.database_url) as c:
        version = c.execute("SELECT version FROM onemap.layers WHERE id = 'carriers'"
                            ).fetchone()[0]
    summary = publish(settings)["carriers"]
    assert " changed 0," in summary and " new 0," in summary and " closed 0," in summary
    with psycopg.connect(settings.database_url) as c:
        assert dict(c.execute(versions).fetchall()) == after
        assert c.execute("SELECT version FROM onemap.layers WHERE id = 'carriers'"
                         ).fetchone()[0] == version
        source, status, counts = c.execute(
            "SELECT source, status, counts FROM onemap.ingests WHERE layer_id = 'carriers'"
            " ORDER BY id DESC LIMIT 1").fetchone()
        fields = {f["name"]: f["type"] for f in c.execute(
            "SELECT fields FROM onemap.layers WHERE id = 'carriers'").fetchone()[0]}
    assert (source, status) == ("registry.carriers", "ok") and counts["unchanged"] >= 1
    assert fields["built_at"] == "date" and fields["slots_taken"] == "integer"
    assert fields["height_m"] == "number" and "produced_at" not in fields
