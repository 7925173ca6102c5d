//! register_customer / authenticate: round trips, the error contract, and
//! timing that does not reveal whether an email exists.

use sqlx::Executor;
use std::time::{Duration, Instant};
use storefront_tests::*;

#[tokio::test]
async fn register_and_authenticate() {
    let pool = fresh_db("sf_accounts_ok").await;
    let id: i64 = sqlx::query_scalar("SELECT storefront.register_customer($1, $2, $3)")
        .bind("Grace.Hopper@Example.org")
        .bind("COBOL-1959")
        .bind("Grace Hopper")
        .fetch_one(&pool)
        .await
        .unwrap();
    let auth = |email: &'static str, pw: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<i64>>("SELECT storefront.authenticate($1, $2)")
                .bind(email)
                .bind(pw)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(auth("grace.hopper@example.org", "COBOL-1959").await, Some(id));
    assert_eq!(auth("  GRACE.HOPPER@EXAMPLE.ORG", "COBOL-1959").await, Some(id));
    assert_eq!(auth("grace.hopper@example.org", "cobol-1959").await, None);
    assert_eq!(auth("nobody@example.org", "COBOL-1959").await, None);
    assert_eq!(auth("", "").await, None);
}

#[tokio::test]
async fn bad_registrations_fail_with_their_sqlstate_and_change_nothing() {
    let pool = fresh_db("sf_accounts_bad").await;
    pool.execute("SELECT storefront.register_customer('taken@example.com', 'pw', 'First')").await.unwrap();

    let e = fails_unchanged(
        &pool,
        "SELECT storefront.register_customer('TAKEN@example.com', 'other', 'Second')",
        "23505",
    )
    .await;
    assert_eq!(e.message, "email address is already registered");
    assert!(e.detail.unwrap_or_default().contains("taken@example.com"));

    for bad in ["plain", "a@b", "@example.com", "a b@example.com", "a@@example.com", "", "x@-bad-.com"] {
        let e = fails_unchanged(
            &pool,
            &format!("SELECT storefront.register_customer('{bad}', 'pw', 'Someone')"),
            "22023",
        )
        .await;
        assert!(e.message.starts_with("invalid email address"), "{e:?}");
        assert!(e.detail.is_some_and(|d| d.ends_with('.')), "DETAIL is a full sentence");
    }
    let e = fails_unchanged(&pool, "SELECT storefront.register_customer('new@example.com', '', 'Someone')", "22023").await;
    assert_eq!(e.message, "password must not be empty");
    fails_unchanged(&pool, "SELECT storefront.register_customer('new@example.com', 'pw', '   ')", "22023").await;
    fails_unchanged(
        &pool,
        &format!("SELECT storefront.register_customer('new@example.com', '{}', 'Someone')", "x".repeat(1025)),
        "22023",
    )
    .await;
    fails_unchanged(&pool, "SELECT storefront.register_customer(NULL, 'pw', 'Someone')", "22004").await;
    fails_unchanged(&pool, "SELECT storefront.register_customer('new@example.com', NULL, 'Someone')", "22004").await;
}

/// A wrong password for a known email and any password for an unknown one
/// both cost one argon2id verification. Without the dummy verification the
/// unknown-email path would be ~100x faster; the bound here is loose (3x)
/// so scheduling noise cannot fail it, while a missing verification would.
#[tokio::test]
async fn authentication_time_does_not_depend_on_the_email_existing() {
    let pool = fresh_db("sf_accounts_timing").await;
    pool.execute("SELECT storefront.register_customer('known@example.com', 'right', 'Known')").await.unwrap();
    async fn once(pool: &sqlx::PgPool, email: &str) -> Duration {
        let t = Instant::now();
        let id: Option<i64> = sqlx::query_scalar("SELECT storefront.authenticate($1, 'wrong')")
            .bind(email)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(id, None);
        t.elapsed()
    }
    // warm both paths (the first call builds the dummy hash)
    once(&pool, "unknown@example.com").await;
    // interleaved rounds, so that load from tests running alongside falls
    // on all three paths alike; the median of each
    let emails = ["known@example.com", "unknown@example.com", "not-an-email"];
    let mut times: [Vec<Duration>; 3] = Default::default();
    for _ in 0..9 {
        for (k, email) in emails.iter().enumerate() {
            times[k].push(once(&pool, email).await);
        }
    }
    for t in &mut times {
        t.sort();
    }
    let (known, unknown, malformed) = (times[0][4], times[1][4], times[2][4]);
    for (what, t) in [("unknown", unknown), ("malformed", malformed)] {
        let ratio = t.as_secs_f64() / known.as_secs_f64();
        assert!(
            (1.0 / 3.0..3.0).contains(&ratio),
            "{what} email took {t:?}, known email with a wrong password {known:?} (ratio {ratio:.2})"
        );
    }
}

/// A stored hash asking for more working memory than can be had (4 TiB,
/// as a tampered row could) fails the call with 53200. It used to abort
/// the backend, and the postmaster then restarted every session: another
/// session here must survive it.
#[tokio::test]
async fn a_hash_that_cannot_be_allocated_is_53200_not_a_crash() {
    let pool = fresh_db("sf_accounts_oom").await;
    pool.execute(
        "SELECT storefront.register_customer('greedy@example.com', 'pw', 'Greedy');
         UPDATE storefront.customer SET password_hash =
           '$argon2id$v=19$m=4294967295,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$Vd0xuqNcmTOeoqTqIq8Ql6i3BEiAIBkdoWYtiprgQgI'",
    )
    .await
    .unwrap();
    let mut bystander = pool.acquire().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *bystander).await.unwrap();
    let e = fails_unchanged(&pool, "SELECT storefront.authenticate('greedy@example.com', 'pw')", "53200").await;
    assert_eq!(e.message, "out of memory");
    assert!(e.detail.unwrap().contains("password hashing"));
    let still: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *bystander).await.unwrap();
    assert_eq!(still, pid, "the other session survived");
}
