//! Inventory: locations, restocks and stock levels. The functions are SQL
//! (sql/inventory.sql: `add_location`, `restock`, `stock`); this module
//! holds their in-database tests.

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    type R = Result<(), pgrx::spi::Error>;

    #[pg_test]
    fn restock_adds_and_records_the_movement() -> R {
        Spi::run("SELECT storefront.upsert_product('KETTLE-1', 'Kettle', 4999)")?;
        assert_eq!(Spi::get_one::<i32>("SELECT storefront.restock('KETTLE-1', 7)")?, Some(7));
        assert_eq!(Spi::get_one::<i32>("SELECT storefront.restock('KETTLE-1', 5, 'main')")?, Some(12));
        let ledger = Spi::get_one::<i64>(
            "SELECT sum(qty) FROM storefront.stock_movement m JOIN storefront.sku s USING (sku_id)
             WHERE s.code = 'KETTLE-1' AND m.reason = 'restock'",
        )?;
        assert_eq!(ledger, Some(12));
        Ok(())
    }

    #[pg_test]
    fn stock_lists_every_location() -> R {
        Spi::run("SELECT storefront.upsert_product('KETTLE-2', 'Kettle', 4999)")?;
        Spi::run("SELECT storefront.add_location('east', 'East warehouse')")?;
        Spi::run("SELECT storefront.restock('KETTLE-2', 3, 'east')")?;
        let rows = Spi::get_one::<String>(
            "SELECT string_agg(format('%s:%s/%s/%s', location, on_hand, reserved, available), ' ')
             FROM storefront.stock('KETTLE-2')",
        )?;
        assert_eq!(rows.as_deref(), Some("main:0/0/0 east:3/0/3"));
        Ok(())
    }

    #[pg_test(error = "location \"nowhere\" does not exist")]
    fn unknown_locations_are_refused() -> R {
        Spi::run("SELECT storefront.upsert_product('KETTLE-3', 'Kettle', 4999)")?;
        Spi::run("SELECT storefront.restock('KETTLE-3', 1, 'nowhere')")?;
        Ok(())
    }

    #[pg_test]
    fn invariants_hold_on_an_empty_and_a_restocked_store() -> R {
        let bad = Spi::get_one::<i64>("SELECT count(*) FROM storefront.check_invariants() WHERE NOT ok")?;
        assert_eq!(bad, Some(0));
        Spi::run("SELECT storefront.upsert_product('KETTLE-4', 'Kettle', 4999)")?;
        Spi::run("SELECT storefront.restock('KETTLE-4', 9)")?;
        let bad = Spi::get_one::<i64>("SELECT count(*) FROM storefront.check_invariants() WHERE NOT ok")?;
        assert_eq!(bad, Some(0));
        // and it notices a level that the ledger does not explain
        Spi::run(
            "UPDATE storefront.inventory SET on_hand = on_hand + 1
             WHERE sku_id = (SELECT sku_id FROM storefront.sku WHERE code = 'KETTLE-4')",
        )?;
        let broken = Spi::get_one::<String>(
            "SELECT string_agg(invariant, ', ') FROM storefront.check_invariants() WHERE NOT ok",
        )?;
        assert_eq!(broken.as_deref(), Some("inventory: on_hand = initial + restocks - sold"));
        Ok(())
    }
}
