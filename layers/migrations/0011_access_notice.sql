-- A notice on every move of the access version, delivered at commit to every server
-- listening on 'onemap_access' (the payload: the new version). Servers then need not read
-- the version on every request; they read everything again when a notice says it moved.
CREATE FUNCTION onemap.notify_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('onemap_access', NEW.version::text);
    RETURN NULL;
END $$;

CREATE TRIGGER access_state_notice AFTER UPDATE ON onemap.access_state FOR EACH ROW
    EXECUTE FUNCTION onemap.notify_access();
