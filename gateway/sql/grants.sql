-- Privileges of the gateway's roles in one store database (run in each, as
-- the extension's owner or a superuser; idempotent): the extension's own
-- grant functions decide what each kind of role may call, and
-- enable_row_security() makes every app-role session name its customer.
SELECT count(*) AS app_privileges FROM storefront.grant_app_role('storefront_app');
SELECT count(*) AS catalog_privileges FROM storefront.grant_catalog_role('storefront_catalog');
SELECT count(*) AS operations_privileges FROM storefront.grant_operations_role('storefront_operations');
SELECT storefront.enable_row_security() AS row_security;
