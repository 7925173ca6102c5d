//! Charts for the book from the dashboard queries on the demo database:
//! runs storefront.dashboard_page_views, dashboard_orders, dashboard_revenue
//! and dashboard_funnel over the last days of the demo data and writes one
//! SVG line chart per query (plus the numbers behind them as CSV).
//!
//!   cargo run -p storefront-benches --bin charts -- \
//!       --url postgres://postgres:storefront@127.0.0.1:28815/storefront_demo --out book/src/timeseries
//!
//! scripts/demo.sh runs it after loading the demo data.

use sqlx::Row;
use std::fmt::Write as _;

const COLORS: [&str; 4] = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5"];

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A line chart: x is seconds since the epoch, labelled as dates.
fn line_chart(title: &str, y_label: &str, series: &[Series], subtitle: &str) -> String {
    let (w, h, left, right, top, bottom) = (820.0, 360.0, 78.0, 20.0, 48.0, 64.0);
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let ymax = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max) * 1.1;
    let ymax = if ymax <= 0.0 { 1.0 } else { ymax };
    let (pw, ph) = (w - left - right, h - top - bottom);
    let sx = |x: f64| left + if x1 > x0 { (x - x0) / (x1 - x0) * pw } else { 0.0 };
    let sy = |y: f64| top + ph - y / ymax * ph;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="15">{title}</text>
<text x="{}" y="36" text-anchor="middle" fill="#4a5568">{subtitle}</text>
"##,
        w / 2.0,
        w / 2.0
    );
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let y = sy(v);
        let _ = writeln!(s, r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e2e8f0"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##, w - right, left - 6.0, y + 4.0, human(v));
    }
    let days = ((x1 - x0) / 86400.0).ceil().max(1.0) as i64;
    let step = (days / 8).max(1);
    let mut d = (x0 / 86400.0).ceil() as i64;
    while (d as f64) * 86400.0 <= x1 {
        let x = sx(d as f64 * 86400.0);
        let date = chrono::DateTime::from_timestamp(d * 86400, 0).map(|t| t.format("%b %d").to_string()).unwrap_or_default();
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#edf2f7"/><text x="{x:.1}" y="{}" text-anchor="middle">{date}</text>"##, top + ph, top + ph + 16.0);
        d += step;
    }
    let _ = writeln!(s, r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{y_label}</text>"#, top + ph / 2.0, top + ph / 2.0);
    for (i, se) in series.iter().enumerate() {
        let pts: Vec<String> = se.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        let _ = writeln!(s, r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#, COLORS[i % 4], pts.join(" "));
        let lx = left + i as f64 * 190.0;
        let _ = writeln!(s, r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#, h - 22.0, COLORS[i % 4], lx + 16.0, h - 12.0, se.name);
    }
    s.push_str("</svg>\n");
    s
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut url = "postgres://postgres:storefront@127.0.0.1:28815/storefront_demo".to_string();
    let mut out = "book/src/timeseries".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--url" => url = it.next().expect("--url URL"),
            "--out" => out = it.next().expect("--out DIR"),
            other => panic!("unknown argument {other}"),
        }
    }
    let pool = sqlx::PgPool::connect(&url).await.expect("connect to the demo database");
    // the window: the last full days of the demo data
    let end: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT date_trunc('day', max(placed_at)) FROM storefront.orders")
            .fetch_one(&pool)
            .await
            .expect("demo data");
    let week = end - chrono::Duration::days(7);
    let day = end - chrono::Duration::days(1);
    let month = end - chrono::Duration::days(28);
    let sub = |from: &chrono::DateTime<chrono::Utc>| format!("demo data, {} to {}", from.format("%Y-%m-%d"), end.format("%Y-%m-%d"));
    let mut csv = String::from("chart,time,series,value\n");

    let mut one = |name: &str, rows: Vec<(chrono::DateTime<chrono::Utc>, f64)>, series: &str| -> Series {
        for (t, v) in &rows {
            let _ = writeln!(csv, "{name},{},{series},{v}", t.to_rfc3339());
        }
        Series { name: series.to_string(), points: rows.iter().map(|(t, v)| (t.timestamp() as f64, *v)).collect() }
    };

    let rows = sqlx::query("SELECT time, page_views FROM storefront.dashboard_page_views($1, $2, '1 hour')")
        .bind(week)
        .bind(end)
        .fetch_all(&pool)
        .await
        .expect("dashboard_page_views");
    let pv = rows.iter().map(|r| (r.get(0), r.get::<i64, _>(1) as f64)).collect();
    let s = one("page_views", pv, "page views per hour");
    let svg = line_chart("Page views per hour", "page views", &[s], &sub(&week));
    std::fs::write(format!("{out}/page-views.svg"), svg).expect("write chart");

    let rows = sqlx::query("SELECT time, orders FROM storefront.dashboard_orders($1, $2, '1 minute')")
        .bind(day)
        .bind(end)
        .fetch_all(&pool)
        .await
        .expect("dashboard_orders");
    let o = rows.iter().map(|r| (r.get(0), r.get::<i64, _>(1) as f64)).collect();
    let s = one("orders", o, "orders per minute");
    std::fs::write(format!("{out}/orders-per-minute.svg"), line_chart("Orders per minute", "orders", &[s], &sub(&day)))
        .expect("write chart");

    let rows = sqlx::query("SELECT time, revenue::float8, metric FROM storefront.dashboard_revenue($1, $2, '1 hour')")
        .bind(week)
        .bind(end)
        .fetch_all(&pool)
        .await
        .expect("dashboard_revenue");
    let mut by: std::collections::BTreeMap<String, Vec<(chrono::DateTime<chrono::Utc>, f64)>> = Default::default();
    for r in &rows {
        by.entry(r.get::<String, _>(2)).or_default().push((r.get(0), r.get::<f64, _>(1)));
    }
    let series: Vec<Series> = by.into_iter().map(|(cur, pts)| one("revenue", pts, &format!("revenue ({cur})"))).collect();
    std::fs::write(format!("{out}/revenue-per-hour.svg"), line_chart("Revenue per hour", "revenue", &series, &sub(&week)))
        .expect("write chart");

    let rows = sqlx::query("SELECT time, views, carts, orders FROM storefront.dashboard_funnel($1, $2)")
        .bind(month)
        .bind(end)
        .fetch_all(&pool)
        .await
        .expect("dashboard_funnel");
    let mut series = Vec::new();
    for (i, name) in ["page views", "add to cart", "orders"].iter().enumerate() {
        let pts = rows.iter().map(|r| (r.get(0), r.get::<i64, _>(i + 1) as f64)).collect();
        series.push(one("funnel", pts, name));
    }
    std::fs::write(format!("{out}/funnel.svg"), line_chart("Daily funnel", "per day", &series, &sub(&month)))
        .expect("write chart");
    std::fs::write(format!("{out}/dashboards.csv"), csv).expect("write csv");
    eprintln!("wrote page-views.svg, orders-per-minute.svg, revenue-per-hour.svg, funnel.svg, dashboards.csv to {out}");
}
