"""Generated capacities for the demo registry (documented in data/samples/README.md).

OpenStreetMap gives where the poles and cameras stand and what they are; it says nothing
of spare watts, ports or mounting slots. This writes two ledgers from a seeded generator:
carriers.csv (power supply, watts, network, ports, slots, status, owner, by OSM id) and
fronts.csv (the OSM cameras with a model, direction and range, mounted on the nearest pole
within 15 m that has room, plus sensors on some poles). Loading them is the ordinary
ledger import, so the demo goes through the same checks as a department's ledger.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path

from registry import osm

MOUNT_M = 15.0
# kind: owner, power supply weights, spare watts, network weights, ports, slot heights
PROFILES = {
    "street_lamp": ("Urban Lighting", {"dusk_to_dawn": 7, "24h": 3}, (40, 150),
                    {None: 6, "lte": 2, "ethernet": 1, "fiber": 1}, (1, 2), (3.0, 4.5, 6.0)),
    "traffic_pole": ("Transport", {"24h": 1}, (80, 250),
                     {"ethernet": 2, "fiber": 3}, (2, 4), (2.5, 4.0, 5.5)),
    "power_pole": ("Power Grid", {"24h": 1}, (100, 300), {None: 3, "lte": 1}, (1, 2),
                   (5.0, 7.0)),
    "mast": ("Telecom", {"24h": 1}, (300, 600), {"fiber": 1}, (4, 8),
             (8.0, 12.0, 16.0, 20.0)),
}
CAMERAS = ("cam-bullet-poe", "cam-dome-poe", "cam-ptz-fiber", "cam-anpr-fiber")
SENSORS = ("aq-sensor-lte", "noise-sensor-lte", "traffic-radar", "wifi-ap")
MODELS = {}  # id -> (power_w, weight_kg, network), read from the device-models ledger


def _pick(rng: random.Random, weights: dict) -> object:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _metres(a: dict, b: dict) -> float:
    k = math.cos(math.radians(a["lat"]))
    return 111_320.0 * math.hypot((a["lon"] - b["lon"]) * k, a["lat"] - b["lat"])


def carriers(rng: random.Random, rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        owner, supply, watts, network, ports, heights = PROFILES[r["kind"]]
        net = _pick(rng, network)
        slots = heights[:rng.randint(1, len(heights))]
        out.append({
            "osm_id": r["osm_id"], "kind": r["kind"], "lon": r["lon"], "lat": r["lat"],
            "owner": owner, "operator": r["operator"] or owner,
            "status": _pick(rng, {"in_service": 94, "faulty": 4, "planned": 2}),
            "power_supply": _pick(rng, supply), "power_w": rng.randrange(*watts, 10),
            "network": net or "", "ports": rng.randint(*ports) if net else 0,
            "height_m": r["height_m"] or round(heights[-1] + rng.uniform(1, 3), 1),
            "slots": "; ".join(f"{h}-{h + 1}:{rng.choice((10, 15, 20))}" for h in slots),
            "built_at": r.get("built_at") or f"{rng.randint(1995, 2023)}-"
                                             f"{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        })
    return out


def _mount(poles: list[dict], load: dict[str, list], front: dict, model: str,
           reach: float) -> tuple[str, int] | None:
    """The nearest pole within ``reach`` with a free slot, the watts, port and weight."""
    watts, weight, network = MODELS[model]
    for d, p in sorted((_metres(front, p), i) for i, p in enumerate(poles)):
        if d > reach:
            return None
        pole = poles[p]
        used = load.setdefault(pole["osm_id"], [0.0, 0, 0])
        slots = [s for s in pole["slots"].split("; ") if s]
        ok = (pole["status"] == "in_service" and used[2] < len(slots)
              and float(slots[used[2]].split(":")[1]) >= weight
              and pole["power_w"] - used[0] >= watts and pole["power_supply"] == "24h"
              and (network is None or (pole["network"] == network
                                       and pole["ports"] - used[1] >= 1)))
        if ok:
            used[0] += watts
            used[1] += network is not None
            used[2] += 1
            return f"osm:{pole['osm_id']}", used[2]
    return None


def fronts(rng: random.Random, cameras: list[dict], poles: list[dict]) -> list[dict]:
    load: dict[str, list] = {}
    out = []
    for c in cameras:
        model = rng.choice(CAMERAS)
        dome = model == "cam-dome-poe"
        row = {"osm_id": c["osm_id"], "kind": "camera", "lon": c["lon"], "lat": c["lat"],
               "model": model, "owner": "Police", "protocol": "onvif",
               "direction": c["direction"] if c["direction"] is not None
               else rng.randrange(0, 360, 5),
               "fov": c["fov"] or (360 if dome else rng.choice((50, 60, 90))),
               "range_m": 30 if dome else rng.choice((40, 60, 80, 120)),
               "asset_no": "", "carrier": "", "slot": ""}
        if (where := _mount(poles, load, c, model, MOUNT_M)) is not None:
            row["carrier"], row["slot"] = where
        out.append(row)
    for n, pole in enumerate(p for p in poles if p["kind"] in ("street_lamp", "traffic_pole")):
        if rng.random() < 0.3:
            model = rng.choice(SENSORS)
            if (where := _mount(poles, load, pole, model, 0.5)) is not None:
                out.append({"osm_id": "", "kind": "sensor", "lon": pole["lon"],
                            "lat": pole["lat"], "model": model, "owner": "Environment",
                            "protocol": "mqtt", "direction": "", "fov": "", "range_m": "",
                            "asset_no": f"DEMO-S{n:05d}", "carrier": where[0],
                            "slot": where[1]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("osm", help="the OSM extract the registry was imported from")
    p.add_argument("models", help="the device-models ledger (CSV)")
    p.add_argument("out", help="folder for carriers.csv and fronts.csv")
    p.add_argument("--seed", type=int, default=20261122)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with open(args.models, newline="", encoding="utf-8") as fh:
        for m in csv.DictReader(fh):
            MODELS[m["id"]] = (float(m["power_w"]), float(m["weight_kg"]), m["network"] or None)
    poles = carriers(rng, osm.read(args.osm, "carrier"))
    rows = {"carriers.csv": poles,
            "fronts.csv": fronts(rng, osm.read(args.osm, "front"), poles)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in rows.items():
        with open(out / name, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
        print(f"{out / name}: {len(table)} generated rows")


if __name__ == "__main__":
    main()
