-- The registry of sensing fronts (cameras, sensors), their carriers (poles, masts) and the
-- city codes that name them (registry/). Shaped after FIWARE Device / DeviceModel /
-- Streetlight, OGC SensorThings Thing/Location/Sensor and OSM's tags. Positions are lon/lat
-- in EPSG:4490; every row carries produced, ingested and updated times; the lifecycle
-- ledger is append-only.
CREATE SCHEMA IF NOT EXISTS registry;

-- One coding rule per kind: region (6-digit administrative code), a 2-letter class, a
-- serial of `width` digits, and an ISO 7064 MOD 37-36 check character. next_serial only
-- grows, so a code is never issued twice.
CREATE TABLE registry.code_rules (
    kind        text PRIMARY KEY,
    entity      text NOT NULL CHECK (entity IN ('carrier', 'front')),
    class       text NOT NULL UNIQUE CHECK (class ~ '^[A-Z]{2}$'),
    region      text NOT NULL CHECK (region ~ '^[0-9]{6}$'),
    width       smallint NOT NULL DEFAULT 7 CHECK (width BETWEEN 4 AND 12),
    next_serial bigint NOT NULL DEFAULT 1
);
INSERT INTO registry.code_rules (kind, entity, class, region) VALUES
    ('street_lamp', 'carrier', 'LP', '110000'),
    ('traffic_pole', 'carrier', 'TP', '110000'),
    ('smart_pole', 'carrier', 'SP', '110000'),
    ('mast', 'carrier', 'MS', '110000'),
    ('power_pole', 'carrier', 'PP', '110000'),
    ('camera', 'front', 'CM', '110000'),
    ('sensor', 'front', 'SN', '110000');

CREATE TABLE registry.codes (
    code      text PRIMARY KEY,
    kind      text NOT NULL REFERENCES registry.code_rules (kind),
    issued_at timestamptz NOT NULL DEFAULT now()
);

-- Legacy identifiers (asset numbers, OSM ids, serials) resolve to the one code.
CREATE TABLE registry.aliases (
    scheme text NOT NULL,
    value  text NOT NULL,
    code   text NOT NULL REFERENCES registry.codes (code),
    PRIMARY KEY (scheme, value)
);
CREATE INDEX ON registry.aliases (code);

CREATE TABLE registry.device_models (
    id        text PRIMARY KEY,
    maker     text,
    model     text,
    category  text NOT NULL,               -- camera, sensor, ...
    power_w   real NOT NULL DEFAULT 0 CHECK (power_w >= 0),
    weight_kg real NOT NULL DEFAULT 0 CHECK (weight_kg >= 0),
    needs_24h boolean NOT NULL DEFAULT true,
    network   text                         -- ethernet, fiber, lte, ... (NULL: none)
);

CREATE TABLE registry.carriers (
    code         text PRIMARY KEY REFERENCES registry.codes (code),
    kind         text NOT NULL,
    geom         geometry(Point, 4490) NOT NULL,
    height_m     real,
    owner        text,
    operator     text,
    status       text NOT NULL DEFAULT 'in_service'
                 CHECK (status IN ('planned', 'in_service', 'faulty', 'retired')),
    power_supply text NOT NULL DEFAULT 'none'
                 CHECK (power_supply IN ('24h', 'dusk_to_dawn', 'none')),
    power_w      real NOT NULL DEFAULT 0 CHECK (power_w >= 0),   -- for devices, in all
    network      text,
    ports        smallint NOT NULL DEFAULT 0 CHECK (ports >= 0),
    cabinet      text,
    built_at     date,
    produced_at  timestamptz NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- Reuse lookups are radius searches in metres.
CREATE INDEX carriers_geog ON registry.carriers USING gist ((geom::geography));

CREATE TABLE registry.slots (
    carrier    text NOT NULL REFERENCES registry.carriers (code),
    slot       smallint NOT NULL CHECK (slot > 0),
    height_min real NOT NULL,
    height_max real NOT NULL CHECK (height_max >= height_min),
    load_kg    real NOT NULL CHECK (load_kg >= 0),
    PRIMARY KEY (carrier, slot)
);

CREATE TABLE registry.fronts (
    code        text PRIMARY KEY REFERENCES registry.codes (code),
    kind        text NOT NULL,
    model       text REFERENCES registry.device_models (id),
    serial      text,
    state       text NOT NULL DEFAULT 'in_service'
                CHECK (state IN ('planned', 'in_service', 'faulty', 'retired')),
    owner       text,
    geom        geometry(Point, 4490) NOT NULL,
    direction   real CHECK (direction >= 0 AND direction < 360),  -- cameras: degrees from north
    fov         real CHECK (fov > 0 AND fov <= 360),              -- cameras: opening angle
    range_m     real CHECK (range_m > 0),                         -- cameras: useful distance
    protocol    text,
    produced_at timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fronts_geog ON registry.fronts USING gist ((geom::geography));

-- Which front hangs on which carrier's slot, from when to when.
CREATE TABLE registry.deployments (
    front      text NOT NULL REFERENCES registry.fronts (code),
    carrier    text NOT NULL REFERENCES registry.carriers (code),
    slot       smallint NOT NULL,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz CHECK (valid_to IS NULL OR valid_to > valid_from),
    FOREIGN KEY (carrier, slot) REFERENCES registry.slots (carrier, slot)
);
CREATE UNIQUE INDEX deployments_slot_now ON registry.deployments (carrier, slot)
    WHERE valid_to IS NULL;
CREATE UNIQUE INDEX deployments_front_now ON registry.deployments (front)
    WHERE valid_to IS NULL;
CREATE INDEX ON registry.deployments (carrier);

-- A department's claim on a slot for a planned front; the carrier's owner decides. One
-- live claim per slot: the second department's request is refused by this index.
CREATE TABLE registry.reservations (
    id          bigserial PRIMARY KEY,
    carrier     text NOT NULL,
    slot        smallint NOT NULL,
    department  text NOT NULL,
    model       text REFERENCES registry.device_models (id),
    note        text,
    status      text NOT NULL DEFAULT 'requested'
                CHECK (status IN ('requested', 'approved', 'refused', 'cancelled')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    decided_at  timestamptz,
    decided_by  text,
    FOREIGN KEY (carrier, slot) REFERENCES registry.slots (carrier, slot)
);
CREATE UNIQUE INDEX reservations_live ON registry.reservations (carrier, slot)
    WHERE status IN ('requested', 'approved');

-- The lifecycle ledger: append-only (the trigger refuses edits), so any past state can be
-- answered from it.
CREATE TABLE registry.events (
    id          bigserial PRIMARY KEY,
    code        text NOT NULL REFERENCES registry.codes (code),
    event       text NOT NULL CHECK (event IN ('procurement', 'installation', 'inspection',
                                               'fault', 'repair', 'upgrade', 'replacement',
                                               'retirement')),
    planned_at  timestamptz,
    actual_at   timestamptz,
    operator    text,
    note        text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CHECK (planned_at IS NOT NULL OR actual_at IS NOT NULL)
);
CREATE INDEX ON registry.events (code, actual_at);

CREATE FUNCTION registry.append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'registry.events is append-only';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON registry.events
    FOR EACH ROW EXECUTE FUNCTION registry.append_only();
