-- The gateway's database roles (cluster-wide): it logs in as
-- storefront_gateway, which has no privileges of its own (NOINHERIT) and
-- switches per request (SET LOCAL ROLE) to the role of its caller, as
-- PostgREST's authenticator does. Run once per cluster as a superuser;
-- idempotent. The login role's password is set separately.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'storefront_gateway') THEN
        CREATE ROLE storefront_gateway LOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'storefront_app') THEN
        CREATE ROLE storefront_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'storefront_catalog') THEN
        CREATE ROLE storefront_catalog NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'storefront_operations') THEN
        CREATE ROLE storefront_operations NOLOGIN;
    END IF;
END
$$;
GRANT storefront_app, storefront_catalog, storefront_operations TO storefront_gateway;
