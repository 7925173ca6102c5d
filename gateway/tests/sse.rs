//! Live order tracking over Server-Sent Events: every status change in
//! order, exactly once, across reconnects (Last-Event-ID), with one shared
//! LISTEN connection.

mod common;

use common::*;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use std::pin::Pin;
use std::time::Duration;

type Events = Pin<Box<dyn Stream<Item = Result<Event, eventsource_stream::EventStreamError<reqwest::Error>>> + Send>>;

async fn open(gw: &Gw, id: i64, token: &str, last_event_id: Option<&str>) -> Events {
    let mut req = gw.http.get(format!("{}/orders/{id}/events", gw.url)).bearer_auth(token);
    if let Some(l) = last_event_id {
        req = req.header("Last-Event-ID", l);
    }
    let resp = req.send().await.expect("stream request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    Box::pin(resp.bytes_stream().eventsource())
}

/// The next `n` events (failing after 10 s).
async fn take(events: &mut Events, n: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n} events: {out:?}", out.len()))
            .expect("stream ended")
            .expect("a well-formed event");
        assert_eq!(ev.event, "status");
        out.push((ev.id.clone(), serde_json::from_str(&ev.data).expect("JSON data")));
    }
    out
}

/// Nothing more arrives within `ms`.
async fn quiet(events: &mut Events, ms: u64) {
    if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(ms), events.next()).await {
        panic!("unexpected event: {ev:?}");
    }
}

async fn pay(gw: &Gw, id: i64, amount: i64, reference: &str) {
    let raw = serde_json::to_vec(&json!({"order_id": id, "amount_cents": amount, "succeeded": true, "provider_ref": reference}))
        .unwrap();
    let sig = storefront_gateway::api::payments::sign(WEBHOOK_SECRET.as_bytes(), chrono::Utc::now().timestamp(), &raw);
    let r = gw
        .send(
            gw.http
                .post(format!("{}/payments/webhook", gw.url))
                .header("content-type", "application/json")
                .header("Storefront-Signature", sig)
                .body(raw),
        )
        .await;
    assert_eq!(r.body["status"], "paid", "{}", r.text);
}

async fn ship(gw: &Gw, id: i64, step: &str) {
    let r = gw.post_raw(&format!("/orders/{id}/{step}"), Some(&gw.ops()), None, vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

fn statuses(evs: &[(String, Value)]) -> Vec<(String, String)> {
    evs.iter().map(|(id, d)| (id.clone(), d["status"].as_str().unwrap_or_default().to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_pay_ship_in_order_and_resume_after_a_reconnect() {
    let admin = small_store("gw_sse").await;
    let gw = gateway("gw_sse", admin, Opts::default()).await;
    let ada = gw.customer(1);
    let r = gw.order(1, json!([{"sku": "TEE-BLK-M", "qty": 1}])).await;
    let (id, total) = (r.body["order_id"].as_i64().unwrap(), r.body["total_cents"].as_i64().unwrap());

    // the stream starts with what happened so far, then follows live
    let mut s = open(&gw, id, &ada, None).await;
    let first = take(&mut s, 1).await;
    assert_eq!(statuses(&first), [("1".to_string(), "pending".to_string())]);
    assert_eq!(first[0].1["order_id"], id);
    assert_eq!(first[0].1["detail"]["lines"], 1);
    pay(&gw, id, total, "psp_sse_1").await;
    ship(&gw, id, "ship").await;
    let live = take(&mut s, 2).await;
    assert_eq!(statuses(&live), [("2".into(), "paid".into()), ("3".into(), "shipped".into())]);
    assert_eq!(live[0].1["detail"]["provider_ref"], "psp_sse_1");
    // the events match the timeline exactly
    let t = gw.get(&format!("/orders/{id}/timeline"), Some(&ada)).await;
    for (i, (_, d)) in first.iter().chain(live.iter()).enumerate() {
        assert_eq!(d["at"], t.body[i]["at"]);
        assert_eq!(d["seq"], t.body[i]["seq"]);
        assert_eq!(d["detail"], t.body[i]["detail"]);
    }
    quiet(&mut s, 300).await;

    // drop the connection after event 2; meanwhile the order is delivered
    drop(s);
    ship(&gw, id, "deliver").await;
    // resume: exactly what was missed (3 and 4), nothing twice
    let mut s = open(&gw, id, &ada, Some("2")).await;
    let resumed = take(&mut s, 2).await;
    assert_eq!(statuses(&resumed), [("3".into(), "shipped".into()), ("4".into(), "delivered".into())]);
    quiet(&mut s, 300).await;
    drop(s);
    // up to date: nothing until the next change
    let mut s = open(&gw, id, &ada, Some("4")).await;
    quiet(&mut s, 300).await;
    drop(s);

    // bad Last-Event-ID, another customer, no token, unknown order
    let r = gw.send(gw.http.get(format!("{}/orders/{id}/events", gw.url)).bearer_auth(&ada).header("Last-Event-ID", "x")).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "22P02"), "{}", r.text);
    let r = gw.get(&format!("/orders/{id}/events"), Some(&gw.customer(2))).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "42501"), "{}", r.text);
    let r = gw.get(&format!("/orders/{id}/events"), None).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "28000"), "{}", r.text);
    let r = gw.get("/orders/999/events", Some(&ada)).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "P0002"), "{}", r.text);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_one_listener_and_the_token_in_the_query() {
    let admin = small_store("gw_sse_many").await;
    let gw = gateway("gw_sse_many", admin, Opts::default()).await;
    let a = gw.order(1, json!([{"sku": "TEE-BLK-M", "qty": 1}])).await.body["order_id"].as_i64().unwrap();
    let b = gw.order(2, json!([{"sku": "TEE-BLK-M", "qty": 1}])).await.body["order_id"].as_i64().unwrap();
    // five watchers of a (one with the token as a query parameter, as a
    // browser's EventSource sends it), one of b
    let mut watchers = Vec::new();
    for i in 0..5 {
        let s = if i == 0 {
            let url = format!("{}/orders/{a}/events?access_token={}", gw.url, gw.customer(1));
            Box::pin(gw.http.get(url).send().await.unwrap().bytes_stream().eventsource()) as Events
        } else {
            open(&gw, a, &gw.customer(1), None).await
        };
        watchers.push(s);
    }
    let mut wb = open(&gw, b, &gw.customer(2), None).await;
    for w in watchers.iter_mut() {
        take(w, 1).await;
    }
    take(&mut wb, 1).await;
    let conns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'storefront-gateway' AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&gw.admin)
    .await
    .unwrap();
    assert_eq!(conns, 1, "one shared listener connection");
    let m = gw.get("/metrics", None).await;
    assert!(m.text.contains("storefront_gateway_event_streams 6"), "{}", m.text);

    let r = gw.post(&format!("/orders/{a}/cancel"), Some(&gw.customer(1)), json!({"reason": "test"})).await;
    assert_eq!(r.status, 200);
    for w in watchers.iter_mut() {
        let e = take(w, 1).await;
        assert_eq!(statuses(&e), [("2".into(), "cancelled".into())]);
        assert_eq!(e[0].1["detail"]["reason"], "test");
    }
    // b's watcher hears nothing of a
    quiet(&mut wb, 300).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_through_the_relay_arrive_too() {
    let admin = small_store("gw_sse_relay").await;
    sqlx::query("ALTER DATABASE gw_sse_relay SET storefront.event_delivery = 'relay'").execute(&admin).await.unwrap();
    let gw = gateway("gw_sse_relay", admin, Opts::default()).await;
    let id = gw.order(1, json!([{"sku": "MUG-1", "qty": 1}])).await.body["order_id"].as_i64().unwrap();
    let mut s = open(&gw, id, &gw.customer(1), None).await;
    take(&mut s, 1).await;
    gw.post_raw(&format!("/orders/{id}/cancel"), Some(&gw.customer(1)), None, vec![]).await;
    // queued, not yet sent: nothing arrives until a relay runs
    quiet(&mut s, 300).await;
    let sent: i32 = sqlx::query_scalar("SELECT storefront.relay_order_events()").fetch_one(&gw.admin).await.unwrap();
    assert!(sent >= 1);
    let e = take(&mut s, 1).await;
    assert_eq!(statuses(&e), [("2".into(), "cancelled".into())]);
    gw.stop().await;
}
