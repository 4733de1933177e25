-- Cluster-wide roles, created idempotently (roles outlive any one database).
-- Run by an administrator (a superuser, or the bootstrap Job in Kubernetes); never by a
-- component. Passwords are set separately, from files, never written here.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('beacon_owner', false),
        ('beacon_migrator', true),
        ('beacon_api', true),
        ('beacon_loader', true),
        ('beacon_transform', true),
        ('beacon_analytics', true),
        ('beacon_analyst', false)
    ) AS t(name, login)
    LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.name) THEN
            EXECUTE format('CREATE ROLE %I %s', r.name, CASE WHEN r.login THEN 'LOGIN' ELSE 'NOLOGIN' END);
        END IF;
        EXECUTE format('ALTER ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', r.name);
    END LOOP;
END
$$;
-- The migrator acts as the owner: objects it creates belong to beacon_owner, which
-- cannot log in. Component roles are not members of anything.
GRANT beacon_owner TO beacon_migrator;
ALTER ROLE beacon_migrator SET role = 'beacon_owner';
-- Sessions that hang idle in a transaction hold locks: cut them off.
ALTER ROLE beacon_api SET idle_in_transaction_session_timeout = '10s';
ALTER ROLE beacon_loader SET idle_in_transaction_session_timeout = '10s';
ALTER ROLE beacon_transform SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE beacon_analytics SET idle_in_transaction_session_timeout = '10s';
-- A component that stops (SIGTERM, a crash, an OOM kill) leaves no statement running:
-- PostgreSQL checks every second during a query whether the client is still there and
-- cancels the query when it is not (PostgreSQL 14+, Linux).
ALTER ROLE beacon_api SET client_connection_check_interval = '1s';
ALTER ROLE beacon_loader SET client_connection_check_interval = '1s';
ALTER ROLE beacon_transform SET client_connection_check_interval = '1s';
ALTER ROLE beacon_analytics SET client_connection_check_interval = '1s';
