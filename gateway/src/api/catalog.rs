//! The catalog: browsing (anyone, cached) and changing it (catalog role).

use super::{encode, json_response, with_cache_header, ApiJson, ApiPath, ApiQuery};
use crate::auth::Caller;
use crate::cache::Lookup;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A sellable SKU as the shop shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow, PartialEq)]
pub struct Product {
    #[schema(example = "TEE-BLK-M")]
    pub sku: String,
    /// the product's name (a product's SKUs are its variants)
    #[schema(example = "Classic Tee")]
    pub product: String,
    /// price of one unit in minor units (cents)
    #[schema(example = 1999)]
    pub price_cents: i64,
    #[schema(example = "USD")]
    pub currency: String,
    /// the category path, lower-cased
    #[schema(example = "apparel/men/shirts")]
    pub category: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// units that can be ordered now, over every location (may be a few
    /// seconds stale when cached; ordering always checks the database)
    pub available: i64,
}

/// One page of the catalog, in SKU order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// pass as `after` for the next page; null on the last page
    pub next_after: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// case-insensitive match on the SKU code, product name or category path
    pub search: Option<String>,
    /// the last SKU of the previous page (keyset pagination)
    pub after: Option<String>,
    /// page size, 1 to 200 (default 50)
    pub limit: Option<i32>,
}

const PRODUCT_COLUMNS: &str = "sku, product, price_cents, currency, category, attributes, available";

/// Browse and search the catalog
///
/// Sellable SKUs in SKU order, with keyset pagination: the response's
/// `next_after` (and its `Link: <...>; rel="next"` header) names the next
/// page. Served from the cache when it can be (`X-Cache: hit`); a page may
/// show stock a couple of seconds old.
///
/// ```sh
/// curl -s "$GATEWAY/products?search=tee&limit=2"
/// ```
/// ```output
/// {"items":[{"sku":"TEE-BLK-L","product":"Classic Tee","price_cents":2199,"currency":"USD","category":"apparel/men/shirts","attributes":{"color":"black","size":"L"},"available":0},{"sku":"TEE-BLK-M","product":"Classic Tee","price_cents":1999,"currency":"USD","category":"apparel/men/shirts","attributes":{"color":"black","size":"M"},"available":25}],"next_after":"TEE-BLK-M"}
/// ```
///
/// A page size out of range is the database's 22023:
///
/// ```sh
/// curl -s "$GATEWAY/products?limit=500"
/// ```
/// ```output
/// {"code":"22023","message":"page size must be between 1 and 200","details":"The page size given was 500.","hint":null}
/// ```
#[utoipa::path(
    get,
    path = "/products",
    tag = "catalog",
    operation_id = "list_products",
    params(ListQuery),
    responses(
        (status = 200, description = "a page of products", body = ProductPage,
         headers(("x-cache" = String, description = "hit, miss or bypass"), ("link" = String, description = "the next page"))),
        (status = 400, description = "a bad page size, search term or parameter", body = ErrorBody),
    )
)]
pub async fn list_products(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(50);
    let gens = st.cache.generations().await;
    let key = gens.map(|g| st.cache.page_key(g, q.search.as_deref(), q.after.as_deref(), limit));
    let lookup = match &key {
        Some(k) => st.cache.get(k).await,
        None => Lookup::Bypass,
    };
    let body = match &lookup {
        Lookup::Hit(body) => body.clone(),
        _ => {
            let (search, after) = (q.search.clone(), q.after.clone());
            let items = st
                .db
                .run(caller, move |c| {
                    let (search, after) = (search.clone(), after.clone());
                    Box::pin(async move {
                        sqlx::query_as::<_, Product>(&format!(
                            "SELECT {PRODUCT_COLUMNS} FROM storefront.products($1, $2, $3)"
                        ))
                        .bind(search)
                        .bind(after)
                        .bind(limit)
                        .fetch_all(&mut *c)
                        .await
                    })
                })
                .await?;
            let next_after = if items.len() as i64 == i64::from(limit) { items.last().map(|p| p.sku.clone()) } else { None };
            let body = encode(&ProductPage { items, next_after })?;
            if let (Some(k), Lookup::Miss) = (&key, &lookup) {
                st.cache.put(k, &body, st.cache.ttl).await;
            }
            body
        }
    };
    let mut resp = with_cache_header(json_response(StatusCode::OK, body.clone()), &lookup);
    // the next page, for clients that follow links
    if let Ok(page) = serde_json::from_str::<ProductPage>(&body) {
        if let Some(after) = page.next_after {
            let mut params: Vec<(&str, String)> = vec![("after", after), ("limit", limit.to_string())];
            if let Some(s) = &q.search {
                params.push(("search", s.clone()));
            }
            if let Ok(qs) = serde_urlencoded::to_string(&params) {
                if let Ok(v) = HeaderValue::from_str(&format!("</products?{qs}>; rel=\"next\"")) {
                    resp.headers_mut().insert(header::LINK, v);
                }
            }
        }
    }
    Ok(resp)
}

/// One product by SKU
///
/// Any SKU, sellable or not. Cached like the catalog pages.
///
/// ```sh
/// curl -s "$GATEWAY/products/TEE-BLK-M"
/// ```
/// ```output
/// {"sku":"TEE-BLK-M","product":"Classic Tee","price_cents":1999,"currency":"USD","category":"apparel/men/shirts","attributes":{"color":"black","size":"M"},"available":25}
/// ```
///
/// ```sh
/// curl -s -i "$GATEWAY/products/NOPE-1"
/// ```
/// ```output
/// HTTP/1.1 404 Not Found
/// content-type: application/json
///
/// {"code":"23503","message":"product SKU \"NOPE-1\" does not exist","details":null,"hint":"Create it with storefront.upsert_product()."}
/// ```
#[utoipa::path(
    get,
    path = "/products/{sku}",
    tag = "catalog",
    operation_id = "get_product",
    params(("sku" = String, Path, description = "SKU code")),
    responses(
        (status = 200, description = "the product", body = Product,
         headers(("x-cache" = String, description = "hit, miss or bypass"))),
        (status = 404, description = "no such SKU (23503)", body = ErrorBody),
    )
)]
pub async fn get_product(State(st): State<AppState>, caller: Caller, ApiPath(sku): ApiPath<String>) -> ApiResult<Response> {
    cached_sku_read(&st, caller, "product", sku, |c, sku| {
        Box::pin(async move {
            let p = sqlx::query_as::<_, Product>(&format!("SELECT {PRODUCT_COLUMNS} FROM storefront.product($1)"))
                .bind(sku)
                .fetch_one(&mut *c)
                .await?;
            serde_json::to_string(&p).map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
    })
    .await
}

/// Stock of one SKU at one location.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow, PartialEq)]
pub struct StockRow {
    #[schema(example = "main")]
    pub location: String,
    pub on_hand: i32,
    /// held by pending orders
    pub reserved: i32,
    pub available: i32,
}

/// Stock of a SKU by location
///
/// ```sh
/// curl -s "$GATEWAY/products/TEE-BLK-M/stock"
/// ```
/// ```output
/// [{"location":"main","on_hand":25,"reserved":0,"available":25}]
/// ```
#[utoipa::path(
    get,
    path = "/products/{sku}/stock",
    tag = "catalog",
    operation_id = "get_stock",
    params(("sku" = String, Path, description = "SKU code")),
    responses(
        (status = 200, description = "stock by location", body = Vec<StockRow>,
         headers(("x-cache" = String, description = "hit, miss or bypass"))),
        (status = 404, description = "no such SKU (23503)", body = ErrorBody),
    )
)]
pub async fn get_stock(State(st): State<AppState>, caller: Caller, ApiPath(sku): ApiPath<String>) -> ApiResult<Response> {
    cached_sku_read(&st, caller, "stock", sku, |c, sku| {
        Box::pin(async move {
            let rows = sqlx::query_as::<_, StockRow>(
                "SELECT location, on_hand, reserved, available FROM storefront.stock($1)",
            )
            .bind(sku)
            .fetch_all(&mut *c)
            .await?;
            serde_json::to_string(&rows).map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
    })
    .await
}

type Reader = for<'c> fn(&'c mut sqlx::PgConnection, String) -> futures_util::future::BoxFuture<'c, Result<String, sqlx::Error>>;

/// Read one SKU's `kind` entry from the cache, else from the database.
async fn cached_sku_read(st: &AppState, caller: Caller, kind: &str, sku: String, read: Reader) -> ApiResult<Response> {
    let key = st.cache.generations().await.and_then(|g| st.cache.sku_key(g, kind, &sku));
    let lookup = match &key {
        Some(k) => st.cache.get(k).await,
        None => Lookup::Bypass,
    };
    let body = match &lookup {
        Lookup::Hit(b) => b.clone(),
        _ => {
            let body = st
                .db
                .run(caller, move |c| read(c, sku.clone()))
                .await
                .map_err(ApiError::fk_as_not_found)?;
            if let (Some(k), Lookup::Miss) = (&key, &lookup) {
                st.cache.put(k, &body, st.cache.ttl).await;
            }
            body
        }
    };
    Ok(with_cache_header(json_response(StatusCode::OK, body), &lookup))
}

/// A product as the catalog team sends it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    /// the product's name; SKUs with the same name and category are variants of one product
    #[schema(example = "Classic Tee")]
    pub name: String,
    #[schema(example = 1999)]
    pub price_cents: i64,
    /// three letters (default USD)
    #[schema(example = "USD")]
    pub currency: Option<String>,
    /// a path such as "Apparel/Men/Shirts"; missing levels are created
    pub category: Option<String>,
    /// a JSON object (default {})
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

/// The saved SKU.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SavedProduct {
    pub sku_id: i64,
    pub product: Product,
}

/// Create or update a SKU (catalog)
///
/// `upsert_product`: creates the SKU, or updates its price, currency,
/// attributes, product and category and puts it back on sale. This is how
/// prices change. Retires every cached catalog entry, so the next read
/// shows the change.
///
/// ```sh
/// curl -s -X PUT "$GATEWAY/products/TEE-BLK-M" -H "Authorization: Bearer $CATALOG_TOKEN" \
///      -H 'Content-Type: application/json' \
///      -d '{"name": "Classic Tee", "price_cents": 1999, "category": "Apparel/Men/Shirts", "attributes": {"color": "black", "size": "M"}}'
/// ```
/// ```output
/// {"sku_id":1,"product":{"sku":"TEE-BLK-M","product":"Classic Tee","price_cents":1999,"currency":"USD","category":"apparel/men/shirts","attributes":{"color":"black","size":"M"},"available":0}}
/// ```
///
/// ```sh
/// curl -s -X PUT "$GATEWAY/products/TEE-BLK-L" -H "Authorization: Bearer $CATALOG_TOKEN" \
///      -H 'Content-Type: application/json' \
///      -d '{"name": "Classic Tee", "price_cents": 2199, "category": "Apparel/Men/Shirts", "attributes": {"color": "black", "size": "L"}}' >/dev/null
/// curl -s -X PUT "$GATEWAY/products/MUG-1" -H "Authorization: Bearer $CATALOG_TOKEN" \
///      -H 'Content-Type: application/json' -d '{"name": "Mug", "price_cents": 899, "category": "Home/Kitchen"}' >/dev/null
/// ```
///
/// Without a catalog token the database refuses (the app role may not
/// call `upsert_product`):
///
/// ```sh
/// curl -s -i -X PUT "$GATEWAY/products/MUG-1" -H 'Content-Type: application/json' -d '{"name": "Mug", "price_cents": 1}'
/// ```
/// ```output
/// HTTP/1.1 401 Unauthorized
/// content-type: application/json
/// www-authenticate: Bearer
///
/// {"code":"42501","message":"permission denied for function upsert_product","details":null,"hint":"This needs a token: log in with POST /auth/login, or use a staff token."}
/// ```
///
/// A body with a field the API does not have is refused before the
/// database is asked:
///
/// ```sh
/// curl -s -X PUT "$GATEWAY/products/MUG-1" -H "Authorization: Bearer $CATALOG_TOKEN" \
///      -H 'Content-Type: application/json' -d '{"name": "Mug", "price_cents": 899, "colour": "red"}'
/// ```
/// ```output
/// {"code":"22023","message":"invalid request body","details":"Unknown field `colour`, expected one of `name`, `price_cents`, `currency`, `category`, `attributes` at line 1 column 44.","hint":"See the operation's request schema in /openapi.json."}
/// ```
#[utoipa::path(
    put,
    path = "/products/{sku}",
    tag = "catalog",
    operation_id = "put_product",
    params(("sku" = String, Path, description = "SKU code: 1 to 64 letters, digits, '.', '_' or '-'")),
    request_body = ProductInput,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "saved", body = SavedProduct),
        (status = 400, description = "a bad code, name, price, currency, category or attributes (22023, 22003)", body = ErrorBody),
        (status = 401, description = "no or a bad token", body = ErrorBody),
        (status = 403, description = "not a catalog token", body = ErrorBody),
    )
)]
pub async fn put_product(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(sku): ApiPath<String>,
    ApiJson(input): ApiJson<ProductInput>,
) -> ApiResult<axum::Json<SavedProduct>> {
    let saved = st
        .db
        .run(caller, move |c| {
            let (sku, input) = (sku.clone(), input.clone());
            Box::pin(async move {
                // named arguments: what is left out takes the function's default
                let mut args = vec!["sku => $1".to_string(), "name => $2".into(), "price_cents => $3".into()];
                for (name, given) in [
                    ("currency", input.currency.is_some()),
                    ("category", input.category.is_some()),
                    ("attributes", input.attributes.is_some()),
                ] {
                    if given {
                        args.push(format!("{name} => ${}", args.len() + 1));
                    }
                }
                let sql = format!("SELECT storefront.upsert_product({})", args.join(", "));
                let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(&sku).bind(&input.name).bind(input.price_cents);
                if let Some(v) = &input.currency {
                    q = q.bind(v);
                }
                if let Some(v) = &input.category {
                    q = q.bind(v);
                }
                if let Some(v) = &input.attributes {
                    q = q.bind(v);
                }
                let sku_id = q.fetch_one(&mut *c).await?;
                let product = sqlx::query_as::<_, Product>(&format!("SELECT {PRODUCT_COLUMNS} FROM storefront.product($1)"))
                    .bind(&sku)
                    .fetch_one(&mut *c)
                    .await?;
                Ok(SavedProduct { sku_id, product })
            })
        })
        .await?;
    st.cache.bump("catalog").await;
    Ok(axum::Json(saved))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SellableInput {
    pub sellable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SellableOut {
    pub sku: String,
    pub sellable: bool,
}

/// Take a SKU off sale or put it back (catalog)
///
/// ```sh
/// curl -s -X PUT "$GATEWAY/products/MUG-1/sellable" -H "Authorization: Bearer $CATALOG_TOKEN" \
///      -H 'Content-Type: application/json' -d '{"sellable": true}'
/// ```
/// ```output
/// {"sku":"MUG-1","sellable":true}
/// ```
#[utoipa::path(
    put,
    path = "/products/{sku}/sellable",
    tag = "catalog",
    operation_id = "set_sellable",
    params(("sku" = String, Path, description = "SKU code")),
    request_body = SellableInput,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "done", body = SellableOut),
        (status = 404, description = "no such SKU (23503)", body = ErrorBody),
        (status = 403, description = "not a catalog token", body = ErrorBody),
    )
)]
pub async fn set_sellable(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(sku): ApiPath<String>,
    ApiJson(input): ApiJson<SellableInput>,
) -> ApiResult<axum::Json<SellableOut>> {
    let sku2 = sku.clone();
    st.db
        .run(caller, move |c| {
            let sku = sku2.clone();
            Box::pin(async move {
                sqlx::query("SELECT storefront.set_sellable($1, $2)")
                    .bind(sku)
                    .bind(input.sellable)
                    .execute(&mut *c)
                    .await
                    .map(|_| ())
            })
        })
        .await
        .map_err(ApiError::fk_as_not_found)?;
    st.cache.bump("catalog").await;
    Ok(axum::Json(SellableOut { sku, sellable: input.sellable }))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockInput {
    /// units received, 1 or more
    #[schema(example = 25)]
    pub qty: i32,
    /// location code (default main)
    pub location: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Restocked {
    pub sku: String,
    pub location: String,
    /// units on hand there now
    pub on_hand: i32,
}

/// Receive stock (catalog)
///
/// ```sh
/// curl -s -X POST "$GATEWAY/products/TEE-BLK-M/restock" -H "Authorization: Bearer $CATALOG_TOKEN" \
///      -H 'Content-Type: application/json' -d '{"qty": 25}'
/// ```
/// ```output
/// {"sku":"TEE-BLK-M","location":"main","on_hand":25}
/// ```
///
/// ```sh
/// curl -s -X POST "$GATEWAY/products/MUG-1/restock" -H "Authorization: Bearer $CATALOG_TOKEN" \
///      -H 'Content-Type: application/json' -d '{"qty": 2}' >/dev/null
/// ```
#[utoipa::path(
    post,
    path = "/products/{sku}/restock",
    tag = "catalog",
    operation_id = "restock",
    params(("sku" = String, Path, description = "SKU code")),
    request_body = RestockInput,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the new stock level", body = Restocked),
        (status = 400, description = "a quantity out of range (22023)", body = ErrorBody),
        (status = 404, description = "no such SKU (23503)", body = ErrorBody),
        (status = 403, description = "not a catalog token", body = ErrorBody),
    )
)]
pub async fn restock(
    State(st): State<AppState>,
    caller: Caller,
    ApiPath(sku): ApiPath<String>,
    ApiJson(input): ApiJson<RestockInput>,
) -> ApiResult<axum::Json<Restocked>> {
    let sku2 = sku.clone();
    let location = input.location.clone();
    let on_hand: i32 = st
        .db
        .run(caller, move |c| {
            let (sku, location) = (sku2.clone(), location.clone());
            Box::pin(async move {
                match location {
                    Some(l) => {
                        sqlx::query_scalar("SELECT storefront.restock(sku => $1, qty => $2, location => $3)")
                            .bind(sku)
                            .bind(input.qty)
                            .bind(l)
                            .fetch_one(&mut *c)
                            .await
                    }
                    None => {
                        sqlx::query_scalar("SELECT storefront.restock(sku => $1, qty => $2)")
                            .bind(sku)
                            .bind(input.qty)
                            .fetch_one(&mut *c)
                            .await
                    }
                }
            })
        })
        .await
        .map_err(ApiError::fk_as_not_found)?;
    st.cache.bump("catalog").await;
    Ok(axum::Json(Restocked { sku, location: input.location.unwrap_or_else(|| "main".into()), on_hand }))
}
