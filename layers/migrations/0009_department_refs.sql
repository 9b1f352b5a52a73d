-- Owners, holders and departments are references to the directory's departments.
--
-- Free names written before are mapped: to the department whose id, or whose name (in any
-- case), they are; a name that is neither gets a department of its own, made for it, so
-- no owner is lost and the mapping can be reviewed with `onemap auth list departments`.
CREATE FUNCTION pg_temp.department_ref(raw text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    found text;
    slug  text;
BEGIN
    IF raw IS NULL OR btrim(raw) = '' THEN
        RETURN NULL;
    END IF;
    SELECT id INTO found FROM onemap.departments
     WHERE id = btrim(raw) OR id = lower(btrim(raw)) OR lower(name) = lower(btrim(raw))
     ORDER BY id = btrim(raw) DESC, id LIMIT 1;
    IF found IS NOT NULL THEN
        RETURN found;
    END IF;
    slug := left(trim(both '-' FROM regexp_replace(lower(btrim(raw)), '[^a-z0-9]+', '-', 'g')),
                 50);
    IF slug !~ '^[a-z]' THEN
        slug := 'dept-' || left(md5(raw), 8);
    END IF;
    WHILE EXISTS (SELECT 1 FROM onemap.departments WHERE id = slug) LOOP
        slug := left(slug, 50) || '-' || left(md5(raw || slug), 4);
    END LOOP;
    INSERT INTO onemap.departments (id, name) VALUES (slug, btrim(raw));
    RETURN slug;
END $$;

UPDATE onemap.layers SET department = pg_temp.department_ref(department)
 WHERE department IS NOT NULL;
UPDATE registry.carriers SET owner = pg_temp.department_ref(owner) WHERE owner IS NOT NULL;
UPDATE registry.fronts SET owner = pg_temp.department_ref(owner) WHERE owner IS NOT NULL;
UPDATE registry.reservations SET department = pg_temp.department_ref(department);

ALTER TABLE onemap.layers ADD CONSTRAINT layers_department_fk FOREIGN KEY (department)
    REFERENCES onemap.departments (id) ON UPDATE CASCADE;
ALTER TABLE registry.carriers ADD CONSTRAINT carriers_owner_fk FOREIGN KEY (owner)
    REFERENCES onemap.departments (id) ON UPDATE CASCADE;
ALTER TABLE registry.fronts ADD CONSTRAINT fronts_owner_fk FOREIGN KEY (owner)
    REFERENCES onemap.departments (id) ON UPDATE CASCADE;
ALTER TABLE registry.reservations ADD CONSTRAINT reservations_department_fk
    FOREIGN KEY (department) REFERENCES onemap.departments (id) ON UPDATE CASCADE;

-- A claim not approved in time lapses; a requester may withdraw its own.
ALTER TABLE registry.reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE registry.reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('requested', 'approved', 'refused', 'cancelled', 'expired'));
CREATE INDEX reservations_requested ON registry.reservations (department)
    WHERE status = 'requested';

UPDATE onemap.access_state SET version = version + 1;
