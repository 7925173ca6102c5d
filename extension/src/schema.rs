//! Schema-wide properties of what `CREATE EXTENSION storefront` installs
//! (sql/schema.sql, sql/finalize.sql): foreign keys are indexed, every
//! function is documented, search_path is pinned where SQL runs, and store
//! data is not reachable by PUBLIC.

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    type R = Result<(), pgrx::spi::Error>;

    /// The first columns of some index on the table are exactly the FK's.
    #[pg_test]
    fn every_foreign_key_has_an_index() -> R {
        let missing = Spi::get_one::<String>(
            "SELECT string_agg(format('%s (%s)', c.conrelid::regclass, c.conname), ', ')
             FROM pg_constraint c
             WHERE c.contype = 'f' AND c.connamespace = 'storefront'::regnamespace
               AND NOT EXISTS (
                 SELECT 1 FROM pg_index i
                 CROSS JOIN LATERAL (SELECT string_to_array(i.indkey::text, ' ')::int2[] AS cols) k
                 WHERE i.indrelid = c.conrelid
                   AND (SELECT array_agg(x ORDER BY x) FROM unnest(k.cols[1:cardinality(c.conkey)]) x)
                     = (SELECT array_agg(x ORDER BY x) FROM unnest(c.conkey) x))",
        )?;
        assert_eq!(missing, None, "foreign keys without an index");
        Ok(())
    }

    #[pg_test]
    fn every_function_has_a_comment() -> R {
        let missing = Spi::get_one::<String>(
            "SELECT string_agg(p.oid::regprocedure::text, ', ')
             FROM pg_proc p
             WHERE p.pronamespace = 'storefront'::regnamespace
               AND obj_description(p.oid, 'pg_proc') IS NULL",
        )?;
        assert_eq!(missing, None, "functions without COMMENT ON");
        Ok(())
    }

    /// Functions that run SQL or are SECURITY DEFINER pin search_path; pure
    /// IMMUTABLE ones have no SET clause (it would block inlining). Exempt:
    /// `acting_customer()` and `calling_role()`, compiled functions that run
    /// no SQL and that row-level security calls per row (a SET clause would
    /// save and restore the GUC at every call), and the `run_maintenance`
    /// procedure, which commits between steps (a procedure with a SET clause
    /// cannot) and sets search_path itself in every transaction it starts.
    #[pg_test]
    fn search_path_is_pinned_where_sql_runs() -> R {
        let unpinned = Spi::get_one::<String>(
            "SELECT string_agg(p.oid::regprocedure::text, ', ')
             FROM pg_proc p
             WHERE p.pronamespace = 'storefront'::regnamespace
               AND (p.prosecdef OR p.provolatile <> 'i')
               AND p.proname NOT IN ('acting_customer', 'calling_role', 'run_maintenance')
               AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s
                               WHERE s IN ('search_path=storefront, pg_temp',
                                           'search_path=pg_catalog, pg_temp'))",
        )?;
        assert_eq!(unpinned, None, "functions running SQL without a pinned search_path");
        let set_on_pure = Spi::get_one::<String>(
            "SELECT string_agg(p.oid::regprocedure::text, ', ')
             FROM pg_proc p
             WHERE p.pronamespace = 'storefront'::regnamespace
               AND p.provolatile = 'i' AND NOT p.prosecdef AND p.proconfig IS NOT NULL",
        )?;
        assert_eq!(set_on_pure, None, "IMMUTABLE functions with a SET clause");
        Ok(())
    }

    /// PUBLIC can execute only pure IMMUTABLE helpers and read no table.
    /// Exempt: the functions row-level security policies and the rollups'
    /// real-time views call as the querying role. They return the caller's
    /// own identity (`calling_role()`, `acting_customer()`,
    /// `sees_every_customer()`) or a rollup's watermark, never store data.
    #[pg_test]
    fn public_reaches_no_store_data() -> R {
        let callable = Spi::get_one::<String>(
            "SELECT string_agg(p.oid::regprocedure::text, ', ')
             FROM pg_proc p
             WHERE p.pronamespace = 'storefront'::regnamespace
               AND p.provolatile <> 'i'
               AND p.proname NOT IN ('acting_customer', 'calling_role', 'sees_every_customer', 'rollup_watermark')
               AND has_function_privilege('public', p.oid, 'EXECUTE')",
        )?;
        assert_eq!(callable, None, "functions PUBLIC may execute");
        let readable = Spi::get_one::<String>(
            "SELECT string_agg(c.oid::regclass::text, ', ')
             FROM pg_class c
             WHERE c.relnamespace = 'storefront'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
               AND has_table_privilege('public', c.oid, 'SELECT')",
        )?;
        assert_eq!(readable, None, "tables PUBLIC may read");
        Ok(())
    }

    /// Every data table is registered with pg_extension_config_dump, so
    /// pg_dump includes its rows. Unlogged tables hold transient rows (the
    /// event queue: like NOTIFY's, they do not outlive a crash) and are not.
    #[pg_test]
    fn data_tables_are_dumped() -> R {
        let unregistered = Spi::get_one::<String>(
            "SELECT string_agg(c.relname, ', ')
             FROM pg_class c
             WHERE c.relnamespace = 'storefront'::regnamespace AND c.relkind IN ('r', 'p')
               AND NOT c.relispartition AND c.relpersistence = 'p'
               AND c.oid <> ALL (coalesce((SELECT extconfig FROM pg_extension
                                           WHERE extname = 'storefront'), '{}'))",
        )?;
        assert_eq!(unregistered, None, "tables pg_dump would skip");
        let transient = Spi::get_one::<String>(
            "SELECT string_agg(c.relname, ', ' ORDER BY c.relname)
             FROM pg_class c
             WHERE c.relnamespace = 'storefront'::regnamespace AND c.relkind IN ('r', 'p') AND c.relpersistence = 'u'",
        )?;
        assert_eq!(transient.as_deref(), Some("order_event_queue"), "unlogged tables");
        Ok(())
    }

    #[pg_test]
    fn inventory_check_constraint_holds_the_bounds() -> R {
        Spi::run("SELECT storefront.upsert_product('BOUND-1', 'Bound test', 100)")?;
        let ok = Spi::get_one::<bool>(
            "SELECT count(*) = 1 FROM storefront.inventory i JOIN storefront.sku s USING (sku_id)
             WHERE s.code = 'BOUND-1' AND i.on_hand = 0 AND i.reserved = 0",
        )?;
        assert_eq!(ok, Some(true));
        Ok(())
    }

    #[pg_test(error = "new row for relation \"inventory\" violates check constraint \"inventory_reserved_range\"")]
    fn reserved_cannot_exceed_on_hand() -> R {
        Spi::run("SELECT storefront.upsert_product('BOUND-2', 'Bound test', 100)")?;
        Spi::run(
            "UPDATE storefront.inventory SET reserved = 1
             WHERE sku_id = (SELECT sku_id FROM storefront.sku WHERE code = 'BOUND-2')",
        )?;
        Ok(())
    }
}
