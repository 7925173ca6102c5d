//! Catalog: categories, products and SKUs. The functions are SQL
//! (sql/catalog.sql: `upsert_product`, `set_sellable`, `category_for_path`);
//! this module holds their in-database tests.

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    type R = Result<(), pgrx::spi::Error>;

    #[pg_test]
    fn upsert_creates_the_category_path_product_and_stock_row() -> R {
        let sku = Spi::get_one::<i64>(
            "SELECT storefront.upsert_product('TEE-BLK-M', 'Classic Tee', 1999, 'usd',
                                              'Apparel/Men/Shirts', '{\"color\": \"black\"}')",
        )?;
        assert!(sku.is_some());
        let path = Spi::get_one::<String>(
            "SELECT c.slug FROM storefront.sku s JOIN storefront.product p USING (product_id)
             JOIN storefront.category c USING (category_id) WHERE s.code = 'TEE-BLK-M'",
        )?;
        assert_eq!(path.as_deref(), Some("apparel/men/shirts"));
        let depth = Spi::get_one::<i64>("SELECT count(*) FROM storefront.category")?;
        assert_eq!(depth, Some(3));
        let currency = Spi::get_one::<String>(
            "SELECT currency::text FROM storefront.sku WHERE code = 'TEE-BLK-M'",
        )?;
        assert_eq!(currency.as_deref(), Some("USD"));
        let stock = Spi::get_one::<i32>("SELECT available FROM storefront.stock('TEE-BLK-M')")?;
        assert_eq!(stock, Some(0));
        Ok(())
    }

    #[pg_test]
    fn variants_share_their_product_and_updates_keep_the_sku_id() -> R {
        let a = Spi::get_one::<i64>(
            "SELECT storefront.upsert_product('TEE-BLK-M', 'Classic Tee', 1999, 'USD', 'Apparel')",
        )?;
        let b = Spi::get_one::<i64>(
            "SELECT storefront.upsert_product('TEE-BLK-L', 'Classic Tee', 2199, 'USD', 'Apparel')",
        )?;
        assert_ne!(a, b);
        let products = Spi::get_one::<i64>("SELECT count(DISTINCT product_id) FROM storefront.sku")?;
        assert_eq!(products, Some(1));
        let again = Spi::get_one::<i64>(
            "SELECT storefront.upsert_product('TEE-BLK-M', 'Classic Tee', 1799, 'USD', 'Apparel')",
        )?;
        assert_eq!(again, a);
        let price = Spi::get_one::<i64>(
            "SELECT price_cents FROM storefront.sku WHERE code = 'TEE-BLK-M'",
        )?;
        assert_eq!(price, Some(1799));
        Ok(())
    }

    #[pg_test]
    fn set_sellable_toggles() -> R {
        Spi::run("SELECT storefront.upsert_product('MUG-1', 'Mug', 899)")?;
        Spi::run("SELECT storefront.set_sellable('MUG-1', false)")?;
        let s = Spi::get_one::<bool>("SELECT sellable FROM storefront.sku WHERE code = 'MUG-1'")?;
        assert_eq!(s, Some(false));
        // upserting puts it back on sale
        Spi::run("SELECT storefront.upsert_product('MUG-1', 'Mug', 899)")?;
        let s = Spi::get_one::<bool>("SELECT sellable FROM storefront.sku WHERE code = 'MUG-1'")?;
        assert_eq!(s, Some(true));
        Ok(())
    }

    #[pg_test(error = "invalid SKU code \"bad code\"")]
    fn bad_sku_codes_are_refused() -> R {
        Spi::run("SELECT storefront.upsert_product('bad code', 'Mug', 899)")?;
        Ok(())
    }

    #[pg_test(error = "invalid category path \"Apparel//Shirts\"")]
    fn empty_category_names_are_refused() -> R {
        Spi::run("SELECT storefront.upsert_product('MUG-2', 'Mug', 899, 'USD', 'Apparel//Shirts')")?;
        Ok(())
    }
}
