//! Every endpoint's happy path and its bad inputs: the status, the error
//! body, and that a refused request changed nothing.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use storefront_gateway::auth::Caller;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_browsing() {
    let admin = small_store("gw_catalog").await;
    let gw = gateway("gw_catalog", admin, Opts::default()).await;

    // first page, then the next by keyset
    let p = gw.get("/products?limit=2", None).await;
    assert_eq!(p.status, 200, "{}", p.text);
    let skus: Vec<&str> = p.body["items"].as_array().unwrap().iter().map(|i| i["sku"].as_str().unwrap()).collect();
    assert_eq!(skus, ["MUG-1", "TEE-BLK-L"]);
    assert_eq!(p.body["next_after"], "TEE-BLK-L");
    assert_eq!(p.header("link"), Some("</products?after=TEE-BLK-L&limit=2>; rel=\"next\""));
    let p2 = gw.get("/products?limit=2&after=TEE-BLK-L", None).await;
    let items = p2.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["sku"], "TEE-BLK-M");
    assert_eq!(items[0]["available"], 25);
    assert_eq!(items[0]["category"], "apparel/men/shirts");
    assert!(p2.body["next_after"].is_null());
    assert!(p2.header("link").is_none());

    // search on name, code and category, case-insensitively
    let s = gw.get("/products?search=TEE", None).await;
    assert_eq!(s.body["items"].as_array().unwrap().len(), 2);
    let s = gw.get("/products?search=kitchen", None).await;
    assert_eq!(s.body["items"][0]["sku"], "MUG-1");
    let s = gw.get("/products?search=50%25%20off", None).await;
    assert_eq!(s.body["items"].as_array().unwrap().len(), 0);

    // one product, its stock
    let m = gw.get("/products/MUG-1", None).await;
    assert_eq!(m.status, 200);
    assert_eq!(m.body, json!({"sku": "MUG-1", "product": "Mug", "price_cents": 899, "currency": "USD",
                              "category": "home/kitchen", "attributes": {}, "available": 2}));
    let st = gw.get("/products/MUG-1/stock", None).await;
    assert_eq!(st.body, json!([{"location": "main", "on_hand": 2, "reserved": 0, "available": 2}]));

    // bad inputs
    let before = digest(&gw.admin).await;
    for (path, status, code) in [
        ("/products?limit=0", 400, "22023"),
        ("/products?limit=201", 400, "22023"),
        ("/products?limit=abc", 400, "22023"),
        ("/products?colour=red", 400, "22023"),
        ("/products/NOPE-1", 404, "23503"),
        ("/products/NOPE-1/stock", 404, "23503"),
        ("/nowhere", 404, "42704"),
    ] {
        let r = gw.get(path, None).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.text);
        assert_eq!(r.code(), code, "{path}: {}", r.text);
    }
    let long = "X".repeat(300);
    let r = gw.get(&format!("/products?search={long}"), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22023"), "{}", r.text);
    let r = gw.send(gw.http.delete(format!("{}/products", gw.url))).await;
    assert_eq!((r.status.as_u16(), r.code()), (405, "0A000"), "{}", r.text);
    assert_eq!(before, digest(&gw.admin).await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_changes_need_the_catalog_role() {
    let admin = small_store("gw_catalog_admin").await;
    let gw = gateway("gw_catalog_admin", admin, Opts::default()).await;
    let body = json!({"name": "Mug", "price_cents": 999, "category": "Home/Kitchen"});

    // nobody but catalog staff: 401 without a token, 403 for a customer or
    // operations, and nothing changes
    let before = digest(&gw.admin).await;
    let r = gw.put("/products/MUG-1", None, body.clone()).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "42501"), "{}", r.text);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    for t in [gw.customer(1), gw.ops()] {
        let r = gw.put("/products/MUG-1", Some(&t), body.clone()).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
        let r = gw.post("/products/MUG-1/restock", Some(&t), json!({"qty": 5})).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
        let r = gw.put("/products/MUG-1/sellable", Some(&t), json!({"sellable": false})).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
    }
    let r = gw.put("/products/MUG-1", Some("not.a.token"), body.clone()).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    // a token signed with another secret
    let other = storefront_gateway::auth::Keys::new("another secret, also 32 bytes long!!", 60).unwrap();
    let forged = other.mint(Caller::Catalog, 60).unwrap().0;
    let r = gw.put("/products/MUG-1", Some(&forged), body.clone()).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    // bad bodies
    let cat = gw.catalog();
    for (b, status, code) in [
        (json!({"name": "Mug", "price_cents": -1}), 400, "22023"),
        (json!({"name": "Mug", "price_cents": 1_000_000_000_001i64}), 400, "22003"),
        (json!({"name": "Mug", "price_cents": 1, "currency": "dollars"}), 400, "22023"),
        (json!({"name": "", "price_cents": 1}), 400, "22023"),
        (json!({"name": "Mug", "price_cents": 1, "attributes": [1, 2]}), 400, "22023"),
        (json!({"name": "Mug", "price_cents": "ten"}), 400, "22023"),
        (json!({"name": "Mug", "price_cents": 1, "colour": "red"}), 400, "22023"),
        (json!({"price_cents": 1}), 400, "22023"),
    ] {
        let r = gw.put("/products/MUG-1", Some(&cat), b.clone()).await;
        assert_eq!((r.status.as_u16(), r.code()), (status, code), "{b}: {}", r.text);
    }
    let r = gw.put("/products/has%20space", Some(&cat), body.clone()).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22023"), "{}", r.text);
    let r = gw.post("/products/NOPE/restock", Some(&cat), json!({"qty": 5})).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "23503"), "{}", r.text);
    let r = gw.post("/products/MUG-1/restock", Some(&cat), json!({"qty": 0})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22023"), "{}", r.text);
    let r = gw.post("/products/MUG-1/restock", Some(&cat), json!({"qty": 1, "location": "nowhere"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "23503"), "{}", r.text);
    let r = gw.put("/products/NOPE/sellable", Some(&cat), json!({"sellable": true})).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "23503"), "{}", r.text);
    assert_eq!(before, digest(&gw.admin).await, "a refused request changed the store");

    // the catalog role can
    let r = gw.put("/products/MUG-1", Some(&cat), body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["product"]["price_cents"], 999);
    let r = gw.put("/products/MUG-2", Some(&cat), json!({"name": "Mug", "price_cents": 1299, "currency": "EUR",
                                                       "attributes": {"color": "red"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["product"]["currency"], "EUR");
    assert_eq!(r.body["product"]["category"], serde_json::Value::Null);
    let r = gw.post("/products/MUG-2/restock", Some(&cat), json!({"qty": 7})).await;
    assert_eq!(r.body, json!({"sku": "MUG-2", "location": "main", "on_hand": 7}));
    let r = gw.put("/products/MUG-2/sellable", Some(&cat), json!({"sellable": false})).await;
    assert_eq!(r.body, json!({"sku": "MUG-2", "sellable": false}));
    let r = gw.get("/products?search=mug", None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "an unsellable SKU is not listed: {}", r.text);
    assert_invariants(&gw.admin).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_tokens() {
    let admin = store("gw_accounts").await;
    let gw = gateway("gw_accounts", admin, Opts::default()).await;
    let r = gw.post("/customers", None, json!({"email": "ada@example.com", "password": "correct horse", "full_name": "Ada"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["customer_id"].as_i64().unwrap();

    let before = digest(&gw.admin).await;
    let r = gw.post("/customers", None, json!({"email": "ada@example.com", "password": "x", "full_name": "Ada"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "23505"), "{}", r.text);
    let r = gw.post("/customers", None, json!({"email": "not an email", "password": "x", "full_name": "Ada"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22023"), "{}", r.text);
    let r = gw.post("/customers", None, json!({"email": "b@example.com", "password": "x"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22023"), "{}", r.text);
    assert!(r.body["details"].as_str().unwrap().contains("full_name"), "{}", r.text);
    let r = gw.post("/auth/login", None, json!({"email": "ada@example.com", "password": "wrong"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28P01"), "{}", r.text);
    let r = gw.post("/auth/login", None, json!({"email": "nobody@example.com", "password": "wrong"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28P01"), "{}", r.text);
    assert_eq!(before, digest(&gw.admin).await);

    let r = gw.post("/auth/login", None, json!({"email": "ada@example.com", "password": "correct horse"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["customer_id"], id);
    assert_eq!(r.body["token_type"], "Bearer");
    let token = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(gw.keys.verify(&token).unwrap(), Caller::Customer(id));
    let exp = chrono::DateTime::parse_from_rfc3339(r.body["expires_at"].as_str().unwrap()).unwrap();
    let ttl = exp.timestamp() - chrono::Utc::now().timestamp();
    assert!((3500..=3600).contains(&ttl), "token lives {ttl} s");

    // events: anonymous and as the customer
    let r = gw.post("/events", None, json!({"kind": "page_view", "props": {"session": "s1"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let r = gw.post("/events", Some(&token), json!({"kind": "add_to_cart"})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT kind, customer_id FROM storefront.event ORDER BY kind").fetch_all(&gw.admin).await.unwrap();
    assert_eq!(rows, vec![("add_to_cart".to_string(), Some(id)), ("page_view".to_string(), None)]);
    let r = gw.post("/events", None, json!({"kind": "Bad Kind!"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22023"), "{}", r.text);
    let r = gw.post("/events", None, json!({"kind": "page_view", "props": "x"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22023"), "{}", r.text);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_happy_path_and_bad_inputs() {
    let admin = small_store("gw_orders").await;
    let gw = gateway("gw_orders", admin, Opts::default()).await;
    let ada = gw.customer(1);

    let r = gw.order(1, json!([{"sku": "TEE-BLK-M", "qty": 2}, {"sku": "MUG-1", "qty": 1}])).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("location"), Some("/orders/1"));
    assert!(r.header("idempotent-replayed").is_none());
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["total_cents"], 2 * 1999 + 899);
    assert_eq!(r.body["replayed"], false);

    let o = gw.get("/orders/1", Some(&ada)).await;
    assert_eq!(o.status, 200, "{}", o.text);
    assert_eq!(o.body["customer_id"], 1);
    assert_eq!(o.body["lines"].as_array().unwrap().len(), 2);
    assert!(o.body["expires_at"].is_string());
    let t = gw.get("/orders/1/timeline", Some(&ada)).await;
    assert_eq!(t.body[0]["seq"], 1);
    assert_eq!(t.body[0]["status"], "pending");
    // operations see every order
    let o2 = gw.get("/orders/1", Some(&gw.ops())).await;
    assert_eq!(o2.body, o.body);

    // a hold of our own choosing
    let r = gw.post("/orders", Some(&ada), json!({"items": [{"sku": "TEE-BLK-M", "qty": 1}], "hold_seconds": 60})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let exp = chrono::DateTime::parse_from_rfc3339(r.body["expires_at"].as_str().unwrap()).unwrap();
    let left = exp.timestamp() - chrono::Utc::now().timestamp();
    assert!((50..=61).contains(&left), "hold of {left} s");

    // every refusal: its status and SQLSTATE, and nothing changed
    let before = digest(&gw.admin).await;
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (json!({"items": [{"sku": "MUG-1", "qty": 5}]}), 409, "23514"),
        (json!({"items": [{"sku": "NOPE", "qty": 1}]}), 409, "23503"),
        (json!({"items": [{"sku": "TEE-BLK-L", "qty": 1}]}), 409, "23514"),
        (json!({"items": []}), 400, "22023"),
        (json!({"items": [{"sku": "MUG-1", "qty": 0}]}), 400, "22023"),
        (json!({"items": [{"sku": "MUG-1", "qty": 1001}]}), 400, "22023"),
        (json!({"items": [{"sku": "MUG-1", "qty": 1.5}]}), 400, "22023"),
        (json!({"items": [{"sku": "MUG-1"}]}), 400, "22023"),
        (json!({"items": [{"sku": "MUG-1", "qty": 1, "gift": true}]}), 400, "22023"),
        (json!({"items": "MUG-1"}), 400, "22023"),
        (json!({"items": [{"sku": "MUG-1", "qty": 1}], "hold_seconds": 0}), 400, "22023"),
        (json!({"items": [{"sku": "MUG-1", "qty": 1}], "hold_seconds": 700000}), 400, "22023"),
        (json!({"items": [{"sku": "MUG-1", "qty": 1}], "coupon": "X"}), 400, "22023"),
        (json!({}), 400, "22023"),
    ];
    for (body, status, code) in cases {
        let r = gw.post("/orders", Some(&ada), body.clone()).await;
        assert_eq!((r.status.as_u16(), r.code()), (status, code), "{body}: {}", r.text);
    }
    // 23514 names the short SKUs
    let r = gw.order(1, json!([{"sku": "MUG-1", "qty": 5}, {"sku": "TEE-BLK-L", "qty": 2}])).await;
    let mut short: Vec<serde_json::Value> = r.body["short_skus"].as_array().unwrap().clone();
    short.sort_by_key(|v| v["sku"].as_str().unwrap().to_string());
    assert_eq!(short, vec![json!({"sku": "MUG-1", "requested": 5, "available": 1}),
                           json!({"sku": "TEE-BLK-L", "requested": 2, "available": 0})]);
    // not JSON, not declared JSON, too big, not even the right shape of request
    let r = gw.post_raw("/orders", Some(&ada), Some("application/json"), b"{\"items\": [".to_vec()).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22P02"), "{}", r.text);
    let r = gw.post_raw("/orders", Some(&ada), Some("text/plain"), br#"{"items": []}"#.to_vec()).await;
    assert_eq!((r.status.as_u16(), r.code()), (415, "0A000"), "{}", r.text);
    let r = gw.post_raw("/orders", Some(&ada), None, br#"{"items": []}"#.to_vec()).await;
    assert_eq!((r.status.as_u16(), r.code()), (415, "0A000"), "{}", r.text);
    let big = format!(r#"{{"items": [{{"sku": "{}", "qty": 1}}]}}"#, "A".repeat(70_000));
    let r = gw.post_raw("/orders", Some(&ada), Some("application/json"), big.into_bytes()).await;
    assert_eq!((r.status.as_u16(), r.code()), (413, "54000"), "{}", r.text);
    let r = gw.post_raw("/orders", Some(&ada), Some("application/json"), vec![0xff, 0xfe, 0x00]).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22P02"), "{}", r.text);
    // who may order: customers only
    let r = gw.post("/orders", None, json!({"items": [{"sku": "MUG-1", "qty": 1}]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    let r = gw.post("/orders", Some(&gw.ops()), json!({"items": [{"sku": "MUG-1", "qty": 1}]})).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
    // a token for a customer that does not exist
    let r = gw.order(999, json!([{"sku": "MUG-1", "qty": 1}])).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "23503"), "{}", r.text);
    // reading: unknown, malformed ids
    let r = gw.get("/orders/999", Some(&ada)).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "P0002"), "{}", r.text);
    let r = gw.get("/orders/999/timeline", Some(&ada)).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "P0002"), "{}", r.text);
    let r = gw.post("/orders/999/cancel", Some(&ada), json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "P0002"), "{}", r.text);
    let r = gw.get("/orders/abc", Some(&ada)).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22P02"), "{}", r.text);
    let r = gw.get("/orders/abc/timeline", Some(&ada)).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22P02"), "{}", r.text);
    let r = gw.get("/orders/99999999999999999999", Some(&ada)).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22P02"), "{}", r.text);
    let r = gw.get("/orders/1", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    let r = gw.get("/orders/1", Some(&gw.catalog())).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
    assert_eq!(before, digest(&gw.admin).await, "a refused request changed the store");

    // cancel: with and without a body
    let r = gw.post("/orders/2/cancel", Some(&ada), json!({"reason": "changed my mind"})).await;
    assert_eq!(r.body, json!({"order_id": 2, "status": "cancelled"}), "{}", r.text);
    let t = gw.get("/orders/2/timeline", Some(&ada)).await;
    assert_eq!(t.body[1]["status"], "cancelled");
    let before = digest(&gw.admin).await;
    let r = gw.post_raw("/orders/2/cancel", Some(&ada), None, vec![]).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "55000"), "{}", r.text);
    let r = gw.post("/orders/1/cancel", Some(&ada), json!({"reason": "x".repeat(501)})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22023"), "{}", r.text);
    let r = gw.post("/orders/1/cancel", Some(&ada), json!({"why": "x"})).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22023"), "{}", r.text);
    let r = gw.post_raw("/orders/1/cancel", Some(&ada), Some("text/plain"), b"because".to_vec()).await;
    assert_eq!((r.status.as_u16(), r.code()), (415, "0A000"), "{}", r.text);
    assert_eq!(before, digest(&gw.admin).await);
    let r = gw.post_raw("/orders/1/cancel", Some(&ada), None, vec![]).await;
    assert_eq!(r.body["status"], "cancelled", "{}", r.text);
    assert_invariants(&gw.admin).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_twenty_concurrent_posts_one_order() {
    let admin = small_store("gw_idem").await;
    let gw = Arc::new(gateway("gw_idem", admin, Opts::default()).await);
    let token = gw.customer(1);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (gw, token) = (gw.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            gw.send(
                gw.http
                    .post(format!("{}/orders", gw.url))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", "checkout-42")
                    .json(&json!({"items": [{"sku": "TEE-BLK-M", "qty": 3}]})),
            )
            .await
        }));
    }
    let mut created = 0;
    let mut replayed = 0;
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            201 => created += 1,
            200 => {
                assert_eq!(r.header("idempotent-replayed"), Some("true"));
                assert_eq!(r.body["replayed"], true);
                replayed += 1;
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
        ids.insert(r.body["order_id"].as_i64().unwrap());
    }
    assert_eq!((created, replayed), (1, 19));
    assert_eq!(ids.len(), 1);
    let (orders, reserved): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM storefront.orders), (SELECT sum(reserved)::bigint FROM storefront.inventory)",
    )
    .fetch_one(&gw.admin)
    .await
    .unwrap();
    assert_eq!((orders, reserved), (1, 3));
    // the key with another request is a conflict
    let r = gw
        .send(
            gw.http
                .post(format!("{}/orders", gw.url))
                .bearer_auth(&token)
                .header("Idempotency-Key", "checkout-42")
                .json(&json!({"items": [{"sku": "TEE-BLK-M", "qty": 4}]})),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "23505"), "{}", r.text);
    // keys are per customer: bob's checkout-42 is another order
    let r = gw
        .send(
            gw.http
                .post(format!("{}/orders", gw.url))
                .bearer_auth(gw.customer(2))
                .header("Idempotency-Key", "checkout-42")
                .json(&json!({"items": [{"sku": "TEE-BLK-M", "qty": 3}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_invariants(&gw.admin).await;
    Arc::try_unwrap(gw).ok().expect("sole owner").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_cannot_touch_each_others_orders() {
    let admin = small_store("gw_owner").await;
    let gw = gateway("gw_owner", admin, Opts::default()).await;
    let r = gw.order(1, json!([{"sku": "TEE-BLK-M", "qty": 1}])).await;
    let id = r.body["order_id"].as_i64().unwrap();
    let bob = gw.customer(2);
    let before = digest(&gw.admin).await;
    for path in [format!("/orders/{id}"), format!("/orders/{id}/timeline"), format!("/orders/{id}/events")] {
        let r = gw.get(&path, Some(&bob)).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{path}: {}", r.text);
    }
    let r = gw.post(&format!("/orders/{id}/cancel"), Some(&bob), json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
    assert_eq!(before, digest(&gw.admin).await);
    // its owner can, and operations can cancel any order
    assert_eq!(gw.get(&format!("/orders/{id}"), Some(&gw.customer(1))).await.status, 200);
    let r = gw.post(&format!("/orders/{id}/cancel"), Some(&gw.ops()), json!({"reason": "fraud check"})).await;
    assert_eq!(r.body["status"], "cancelled", "{}", r.text);
    gw.stop().await;
}

fn signed(body: &serde_json::Value, secret: &str, at: i64) -> (String, Vec<u8>) {
    let raw = serde_json::to_vec(body).unwrap();
    (storefront_gateway::api::payments::sign(secret.as_bytes(), at, &raw), raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_webhook_and_fulfilment() {
    let admin = small_store("gw_pay").await;
    let gw = gateway("gw_pay", admin, Opts::default()).await;
    let r = gw.order(1, json!([{"sku": "TEE-BLK-M", "qty": 2}])).await;
    let id = r.body["order_id"].as_i64().unwrap();
    let total = r.body["total_cents"].as_i64().unwrap();
    let now = chrono::Utc::now().timestamp();
    let hook = |sig: Option<String>, raw: Vec<u8>| {
        let mut req = gw.http.post(format!("{}/payments/webhook", gw.url)).header("content-type", "application/json").body(raw);
        if let Some(s) = sig {
            req = req.header("Storefront-Signature", s);
        }
        gw.send(req)
    };
    let ev = json!({"order_id": id, "amount_cents": total, "succeeded": true, "provider_ref": "psp_1"});

    // forged, stale, unsigned, malformed: refused, nothing changes
    let before = digest(&gw.admin).await;
    let (sig, raw) = signed(&ev, "whsec_someone_else_entirely", now);
    assert_eq!(hook(Some(sig), raw).await.status, 401);
    let (sig, raw) = signed(&ev, WEBHOOK_SECRET, now - 3600);
    let r = hook(Some(sig), raw).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    let (_, raw) = signed(&ev, WEBHOOK_SECRET, now);
    assert_eq!(hook(None, raw.clone()).await.status, 401);
    // a signature over another body
    let (sig, _) = signed(&json!({"order_id": id, "amount_cents": 1, "succeeded": true, "provider_ref": "psp_1"}), WEBHOOK_SECRET, now);
    assert_eq!(hook(Some(sig), raw).await.status, 401);
    for (body, status, code) in [
        (json!({"order_id": id, "amount_cents": total - 1, "succeeded": true, "provider_ref": "psp_x"}), 400, "22023"),
        (json!({"order_id": 999, "amount_cents": total, "succeeded": true, "provider_ref": "psp_x"}), 404, "P0002"),
        (json!({"order_id": id, "amount_cents": total, "succeeded": true}), 400, "22023"),
        (json!({"order_id": id, "amount_cents": total, "succeeded": true, "provider_ref": ""}), 400, "22023"),
    ] {
        let (sig, raw) = signed(&body, WEBHOOK_SECRET, now);
        let r = hook(Some(sig), raw).await;
        assert_eq!((r.status.as_u16(), r.code()), (status, code), "{body}: {}", r.text);
    }
    let bad = b"{not json".to_vec();
    let sig = storefront_gateway::api::payments::sign(WEBHOOK_SECRET.as_bytes(), now, &bad);
    let r = hook(Some(sig), bad).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22P02"), "{}", r.text);
    // a signed body that is not declared JSON
    let (sig, raw) = signed(&ev, WEBHOOK_SECRET, now);
    let r = gw
        .send(gw.http.post(format!("{}/payments/webhook", gw.url)).header("content-type", "text/plain").header("Storefront-Signature", sig).body(raw))
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (415, "0A000"), "{}", r.text);
    // a malformed signature header
    let (_, raw) = signed(&ev, WEBHOOK_SECRET, now);
    let r = hook(Some("v1=nothex,t=soon".into()), raw).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    assert_eq!(before, digest(&gw.admin).await);

    // paid; the provider's retry returns the same answer and changes nothing
    let (sig, raw) = signed(&ev, WEBHOOK_SECRET, now);
    let r = hook(Some(sig.clone()), raw.clone()).await;
    assert_eq!(r.body, json!({"order_id": id, "status": "paid", "provider_ref": "psp_1"}), "{}", r.text);
    let after_pay = digest(&gw.admin).await;
    let r = hook(Some(sig), raw).await;
    assert_eq!(r.body["status"], "paid", "{}", r.text);
    assert_eq!(after_pay, digest(&gw.admin).await, "a replayed webhook changed something");
    // another reference for a paid order
    let (sig, raw) = signed(&json!({"order_id": id, "amount_cents": total, "succeeded": true, "provider_ref": "psp_2"}), WEBHOOK_SECRET, now);
    let r = hook(Some(sig), raw).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "55000"), "{}", r.text);

    // fulfilment: operations only, in order
    let ada = gw.customer(1);
    let r = gw.post(&format!("/orders/{id}/ship"), Some(&ada), json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
    let r = gw.post(&format!("/orders/{id}/ship"), Some(&gw.catalog()), json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
    let r = gw.post_raw(&format!("/orders/{id}/ship"), None, None, vec![]).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    let ops = gw.ops();
    let r = gw.post_raw(&format!("/orders/{id}/deliver"), Some(&ops), None, vec![]).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "55000"), "{}", r.text);
    let r = gw.post_raw(&format!("/orders/{id}/ship"), Some(&ops), None, vec![]).await;
    assert_eq!(r.body, json!({"order_id": id, "status": "shipped"}), "{}", r.text);
    let r = gw.post_raw(&format!("/orders/{id}/deliver"), Some(&ops), None, vec![]).await;
    assert_eq!(r.body, json!({"order_id": id, "status": "delivered"}), "{}", r.text);
    let r = gw.post_raw("/orders/999/ship", Some(&ops), None, vec![]).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "P0002"), "{}", r.text);
    let t = gw.get(&format!("/orders/{id}/timeline"), Some(&ada)).await;
    let statuses: Vec<&str> = t.body.as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["pending", "paid", "shipped", "delivered"]);

    // a failed payment releases the stock
    let r = gw.order(2, json!([{"sku": "MUG-1", "qty": 2}])).await;
    let id2 = r.body["order_id"].as_i64().unwrap();
    let (sig, raw) =
        signed(&json!({"order_id": id2, "amount_cents": 1798, "succeeded": false, "provider_ref": "psp_3"}), WEBHOOK_SECRET, now);
    let r = hook(Some(sig), raw).await;
    assert_eq!(r.body["status"], "payment_failed", "{}", r.text);
    let s = gw.get("/products/MUG-1/stock", None).await;
    assert_eq!(s.body[0]["available"], 2, "{}", s.text);

    // the pipeline
    let p = gw.get("/operations/pipeline", Some(&ops)).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.body["delivery"], "notify");
    assert!(p.body["pending_holds"].is_number());
    let p = gw.get("/operations/pipeline", Some(&ada)).await;
    assert_eq!((p.status.as_u16(), p.code()), (403, "42501"), "{}", p.text);
    assert_invariants(&gw.admin).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeouts_are_503_with_retry_after() {
    let admin = small_store("gw_locks").await;
    let gw = gateway("gw_locks", admin, Opts::default()).await;
    // hold the stock row of MUG-1 past place_order's lock_timeout
    let mut tx = gw.admin.begin().await.unwrap();
    sqlx::query(
        "SELECT 1 FROM storefront.inventory i JOIN storefront.sku s USING (sku_id) WHERE s.code = 'MUG-1' FOR UPDATE OF i",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let before = digest(&gw.admin).await;
    let r = gw.order(1, json!([{"sku": "MUG-1", "qty": 1}])).await;
    assert_eq!((r.status.as_u16(), r.code()), (503, "55P03"), "{}", r.text);
    assert_eq!(r.header("retry-after"), Some("1"));
    tx.rollback().await.unwrap();
    assert_eq!(before, digest(&gw.admin).await);
    assert_eq!(gw.order(1, json!([{"sku": "MUG-1", "qty": 1}])).await.status, 201);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeouts_are_504() {
    let admin = small_store("gw_timeout").await;
    let gw = gateway("gw_timeout", admin, Opts { tweak: Box::new(|c| c.statement_timeout_ms = 300), ..Opts::default() }).await;
    let id = gw.order(1, json!([{"sku": "MUG-1", "qty": 1}])).await.body["order_id"].as_i64().unwrap();
    // the order row held by another session: cancelling waits past the
    // gateway's statement_timeout (before the function's own lock_timeout)
    let mut tx = gw.admin.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM storefront.orders WHERE order_id = $1 FOR UPDATE").bind(id).execute(&mut *tx).await.unwrap();
    let before = digest(&gw.admin).await;
    let started = std::time::Instant::now();
    let r = gw.post(&format!("/orders/{id}/cancel"), Some(&gw.customer(1)), json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (504, "57014"), "{}", r.text);
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    tx.rollback().await.unwrap();
    assert_eq!(before, digest(&gw.admin).await);
    // and the connection is fine for the next request
    let r = gw.post(&format!("/orders/{id}/cancel"), Some(&gw.customer(1)), json!({})).await;
    assert_eq!(r.body["status"], "cancelled", "{}", r.text);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_are_retried_then_503() {
    let admin = store("gw_retry").await;
    let gw = gateway("gw_retry", admin, Opts { tweak: Box::new(|c| c.tx_attempts = 4), ..Opts::default() }).await;
    let db = &gw.state().db;
    // fails with 40001 twice, then succeeds: the caller sees the success
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let v: i32 = db
        .run(Caller::Anonymous, move |c| {
            let n = a.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n < 2 {
                    sqlx::query("DO $$ BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = 'serialization_failure'; END $$")
                        .execute(&mut *c)
                        .await?;
                }
                sqlx::query_scalar("SELECT 7").fetch_one(&mut *c).await
            })
        })
        .await
        .expect("retried to success");
    assert_eq!((v, attempts.load(Ordering::SeqCst)), (7, 3));
    // a deadlock every time: 4 attempts, then 503 with Retry-After
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let e = db
        .run(Caller::Anonymous, move |c| {
            a.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                sqlx::query("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected'; END $$")
                    .execute(&mut *c)
                    .await
                    .map(|_| ())
            })
        })
        .await
        .expect_err("never succeeds");
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    assert_eq!((e.status.as_u16(), e.code(), e.retry_after), (503, "40P01", Some(1)));
    // other errors are not retried
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let e = db
        .run(Caller::Anonymous, move |c| {
            a.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { sqlx::query("SELECT 1/0").execute(&mut *c).await.map(|_| ()) })
        })
        .await
        .expect_err("division by zero");
    assert_eq!((attempts.load(Ordering::SeqCst), e.code()), (1, "22012"));
    // the retries are counted
    let m = gw.get("/metrics", None).await;
    assert!(m.text.contains("storefront_gateway_tx_retries_total{sqlstate=\"40P01\"}"), "{}", m.text);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_does_not_take_the_server_down() {
    let admin = small_store("gw_panic").await;
    let extra = axum::Router::new().route(
        "/test/panic",
        axum::routing::get(|| async {
            if std::hint::black_box(true) {
                panic!("a bug in a handler");
            }
            "unreachable"
        }),
    );
    let gw = gateway("gw_panic", admin, Opts { extra, ..Opts::default() }).await;
    for _ in 0..3 {
        let r = gw.get("/test/panic", None).await;
        assert_eq!((r.status.as_u16(), r.code()), (500, "XX000"), "{}", r.text);
    }
    // still serving, with the pool intact
    assert_eq!(gw.get("/products/MUG-1", None).await.status, 200);
    assert_eq!(gw.order(1, json!([{"sku": "MUG-1", "qty": 1}])).await.status, 201);
    let m = gw.get("/metrics", None).await;
    assert!(m.text.contains("storefront_gateway_panics_total"), "{}", m.text);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_endpoints() {
    let admin = small_store("gw_service").await;
    let gw = gateway("gw_service", admin, Opts::default()).await;
    let r = gw.get("/healthz", None).await;
    assert_eq!(r.body, json!({"status": "ok"}));
    let r = gw.get("/readyz", None).await;
    assert_eq!(r.body, json!({"status": "ok", "database": "ok", "redis": "ok", "listener": "ok"}), "{}", r.text);
    assert!(r.header("x-request-id").is_some_and(|id| id.len() == 36), "request id: {:?}", r.headers);
    // a request id sent is kept
    let r = gw.send(gw.http.get(format!("{}/healthz", gw.url)).header("x-request-id", "abc-123")).await;
    assert_eq!(r.header("x-request-id"), Some("abc-123"));

    // traffic, then the metrics
    gw.get("/products/MUG-1", None).await;
    gw.get("/products/MUG-1", None).await;
    gw.get("/products/NOPE", None).await;
    let m = gw.get("/metrics", None).await;
    assert_eq!(m.status, 200);
    for needle in [
        "storefront_gateway_http_requests_total{method=\"GET\",route=\"/products/{sku}\",status=\"200\"}",
        "storefront_gateway_http_requests_total{method=\"GET\",route=\"/products/{sku}\",status=\"404\"}",
        "storefront_gateway_http_request_duration_seconds_bucket{method=\"GET\",route=\"/products/{sku}\",le=\"0.005\"}",
        "storefront_gateway_db_pool_connections{state=\"idle\"}",
        "storefront_gateway_db_pool_max_connections",
        "storefront_gateway_cache_hit_ratio",
        "storefront_gateway_cache_requests_total{result=\"hit\"}",
        "storefront_gateway_event_streams",
        "storefront_gateway_listener_up 1",
        "storefront_gateway_cache_up 1",
    ] {
        assert!(m.text.contains(needle), "metrics lack {needle}:\n{}", m.text);
    }

    // the OpenAPI document: every route, with its errors documented
    let d = gw.get("/openapi.json", None).await;
    assert_eq!(d.body["openapi"], "3.1.0");
    let paths = d.body["paths"].as_object().unwrap();
    for p in ["/products", "/products/{sku}", "/orders", "/orders/{order_id}/events", "/payments/webhook", "/dashboard/data"] {
        assert!(paths.contains_key(p), "{p} missing from the document");
    }
    assert!(d.body["components"]["schemas"]["ErrorBody"].is_object());
    assert!(d.body["components"]["securitySchemes"]["bearer"].is_object());
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            assert!(op["operationId"].is_string(), "{method} {path} has no operationId");
        }
    }

    // the dashboard's data: operations only
    let r = gw.get("/dashboard/data", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    let r = gw.get("/dashboard/data", Some(&gw.customer(1))).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
    gw.order(1, json!([{"sku": "MUG-1", "qty": 1}])).await;
    let r = gw.get("/dashboard/data", Some(&gw.ops())).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["orders_per_minute"].as_array().unwrap().len(), 60, "{}", r.text);
    let placed: f64 = r.body["orders_per_minute"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).sum();
    assert_eq!(placed, 1.0);
    assert_eq!(r.body["page_views_per_hour"].as_array().unwrap().len(), 48);
    assert_eq!(r.body["funnel"].as_array().unwrap().len(), 14);
    assert_eq!(r.body["pipeline"]["pending_holds"], 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_event_streams() {
    let admin = small_store("gw_shutdown").await;
    let gw = gateway("gw_shutdown", admin, Opts::default()).await;
    let id = gw.order(1, json!([{"sku": "MUG-1", "qty": 1}])).await.body["order_id"].as_i64().unwrap();
    let resp = gw
        .http
        .get(format!("{}/orders/{id}/events", gw.url))
        .bearer_auth(gw.customer(1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let url = gw.url.clone();
    let started = std::time::Instant::now();
    // stop() cancels the streams and returns once the server has stopped
    gw.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "shutdown waited for an open stream");
    let body = tokio::time::timeout(std::time::Duration::from_secs(5), resp.text()).await.expect("stream ended").unwrap();
    assert!(body.contains("\"status\":\"pending\""), "{body}");
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err(), "still accepting after shutdown");
}

type Snapshots = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<eventsource_stream::Event, eventsource_stream::EventStreamError<reqwest::Error>>> + Send>,
>;

async fn next_snapshot(events: &mut Snapshots) -> serde_json::Value {
    use futures_util::StreamExt;
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .expect("a snapshot in time")
        .expect("the stream is open")
        .expect("a well-formed event");
    assert_eq!(ev.event, "snapshot");
    serde_json::from_str(&ev.data).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_page_assets_and_stream() {
    // a web directory with the page and stand-ins for the built bundle
    let web = std::env::temp_dir().join(format!("sf-gw-web-{}", std::process::id()));
    std::fs::create_dir_all(web.join("vendor")).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    for f in ["dashboard.html", "dashboard.js", "dashboard.css"] {
        std::fs::copy(src.join(f), web.join(f)).unwrap();
    }
    let admin = small_store("gw_dash").await;
    let dir = web.clone();
    let gw = gateway("gw_dash", admin, Opts { tweak: Box::new(move |c| c.web_dir = dir), ..Opts::default() }).await;

    // the bundle not built: 503 with what to do
    let r = gw.get("/dashboard", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (503, "58P01"), "{}", r.text);
    assert!(r.body["hint"].as_str().unwrap().contains("gateway_assets"), "{}", r.text);
    std::fs::write(web.join("vendor/uPlot.iife.min.js"), "/* uPlot */").unwrap();
    std::fs::write(web.join("vendor/uPlot.min.css"), "/* uPlot */").unwrap();
    // built: the page (public: it holds no data) and its files
    let r = gw.get("/dashboard", None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text.contains("live dashboard") && r.text.contains("/dashboard/assets/vendor/uPlot.iife.min.js"));
    let r = gw.get("/dashboard/assets/dashboard.js", None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().contains("javascript"), "{:?}", r.headers);
    assert!(r.text.contains("EventSource"));
    assert_eq!(gw.get("/dashboard/assets/nope.js", None).await.status, 404);
    assert_eq!(gw.get("/dashboard/assets/../Cargo.toml", None).await.status.as_u16() / 100, 4);

    // the stream: operations only; the token may come as a query parameter
    let r = gw.get("/dashboard/stream", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    let r = gw.get(&format!("/dashboard/stream?access_token={}", gw.customer(1)), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
    let r = gw.get("/dashboard/stream?access_token=garbage", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    let resp = gw.http.get(format!("{}/dashboard/stream?access_token={}", gw.url, gw.ops())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut events: Snapshots = Box::pin(eventsource_stream::Eventsource::eventsource(resp.bytes_stream()));
    let first = next_snapshot(&mut events).await;
    assert_eq!(first["orders_per_minute"].as_array().unwrap().len(), 60);
    let total = |s: &serde_json::Value| -> f64 { s["orders_per_minute"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).sum() };
    assert_eq!(total(&first), 0.0);
    // an order moves the next snapshot
    gw.order(1, json!([{"sku": "MUG-1", "qty": 1}])).await;
    let mut moved = false;
    for _ in 0..5 {
        let s = next_snapshot(&mut events).await;
        if total(&s) == 1.0 {
            assert_eq!(s["pipeline"]["pending_holds"], 1);
            moved = true;
            break;
        }
    }
    assert!(moved, "no snapshot showed the order");
    drop(events);
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&web);
}
