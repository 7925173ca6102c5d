//! Customer accounts: registration with argon2id password hashes and
//! authentication whose running time does not depend on whether the email
//! exists.
//!
//! Pure logic (email normalisation, input checks, hashing) is plain Rust,
//! tested without a database; the `#[pg_extern]`s are thin SPI wrappers.

use crate::errors::{report, Kind, StoreError, StoreResult};
use crate::spi_util::first_row;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::sync::OnceLock;

/// Longest password accepted (bytes). Hashing cost does not grow with length
/// in argon2 beyond one pass, but unbounded input is still refused.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// RFC 5321 path limit.
pub const MAX_EMAIL_LEN: usize = 254;

/// Trim and lower-case an email and check its shape: one `@`, a non-empty
/// local part of at most 64 characters without spaces, and a domain of at
/// least two dot-separated labels of letters, digits and hyphens.
pub fn normalize_email(raw: &str) -> StoreResult<String> {
    let email = raw.trim().to_lowercase();
    let bad = |why: &str| {
        StoreError::invalid(format!("invalid email address \"{}\"", raw.trim()))
            .detail(why.to_string())
    };
    if email.is_empty() {
        return Err(bad("The email address is empty."));
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(bad("An email address has at most 254 characters."));
    }
    let mut parts = email.split('@');
    let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
        (Some(l), Some(d), None) => (l, d),
        _ => return Err(bad("An email address has exactly one \"@\".")),
    };
    if local.is_empty() || local.len() > 64 {
        return Err(bad("The part before \"@\" must have 1 to 64 characters."));
    }
    if local.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == ',') {
        return Err(bad("The part before \"@\" contains a space or a character that is not allowed."));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(bad("The part before \"@\" cannot start or end with a dot or contain two dots in a row."));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(bad("The domain must be a host name such as \"example.com\"."));
    }
    Ok(email)
}

pub fn check_password(password: &str) -> StoreResult<()> {
    if password.is_empty() {
        return Err(StoreError::invalid("password must not be empty"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(StoreError::invalid("password is too long")
            .detail(format!("A password has at most {MAX_PASSWORD_BYTES} bytes.")));
    }
    Ok(())
}

pub fn check_full_name(name: &str) -> StoreResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::invalid("full name must not be empty"));
    }
    if name.chars().count() > 200 {
        return Err(StoreError::invalid("full name is too long")
            .detail("A full name has at most 200 characters."));
    }
    Ok(name.to_string())
}

/// argon2id v19, m = 19 MiB, t = 2, p = 1: the OWASP baseline and the
/// crate's default. Changing it keeps old hashes verifiable (the PHC string
/// carries its own parameters).
fn default_params() -> Params {
    Params::default()
}

/// The working memory of one argon2 run, allocated fallibly: a failed
/// allocation is a 53200 error for the caller, not an abort of the backend
/// (which would make the postmaster restart every session).
pub fn argon2_memory(blocks: usize) -> StoreResult<Vec<Block>> {
    let mut memory: Vec<Block> = Vec::new();
    memory
        .try_reserve_exact(blocks)
        .map_err(|_| StoreError::out_of_memory("password hashing", blocks.saturating_mul(Block::SIZE)))?;
    memory.resize(blocks, Block::default());
    Ok(memory)
}

/// Run argon2 with explicit algorithm, version and parameters into `out`.
fn argon2_into(alg: Algorithm, version: Version, params: Params, pwd: &[u8], salt: &[u8], out: &mut [u8]) -> StoreResult<()> {
    let mut memory = argon2_memory(params.block_count())?;
    Argon2::new(alg, version, params)
        .hash_password_into_with_memory(pwd, salt, out, &mut memory)
        .map_err(|e| StoreError::internal(format!("could not hash password: {e}")))
}

/// Hash a password into a PHC string (`$argon2id$v=19$m=...`).
pub fn hash_password(password: &str) -> StoreResult<String> {
    let internal = |e: &dyn std::fmt::Display| StoreError::internal(format!("could not hash password: {e}"));
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| internal(&e))?;
    let params = default_params();
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    argon2_into(Algorithm::Argon2id, Version::V0x13, params.clone(), password.as_bytes(), salt_bytes, &mut out)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| internal(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| internal(&e))?),
    };
    Ok(phc.to_string())
}

/// Verify `password` against a parsed PHC hash: recompute with its own
/// algorithm, version, parameters and salt, compare in constant time.
/// Ok(false) for hashes this cannot read; Err only for a failed allocation.
fn verify_phc(password: &str, phc: &PasswordHash<'_>) -> StoreResult<bool> {
    let (Ok(alg), Some(expected), Some(salt)) = (Algorithm::try_from(phc.algorithm), phc.hash, phc.salt) else {
        return Ok(false);
    };
    let Ok(version) = Version::try_from(phc.version.unwrap_or(19)) else { return Ok(false) };
    let Ok(params) = Params::try_from(phc) else { return Ok(false) };
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else { return Ok(false) };
    let mut out = vec![0u8; expected.len()];
    match argon2_into(alg, version, params, password.as_bytes(), salt_bytes, &mut out) {
        Ok(()) => {}
        Err(e) if e.kind == Kind::OutOfMemory => return Err(e),
        Err(_) => return Ok(false),
    }
    // Output's equality is constant-time
    Ok(Output::new(&out).is_ok_and(|o| o == expected))
}

/// A hash of a random password with the default parameters, verified
/// against when there is no real hash, so that an unknown email costs the
/// same time as a known one with a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = SaltString::generate(&mut OsRng);
        hash_password(random.as_str()).unwrap_or_else(|_| {
            // a fixed, well-formed PHC string with the default parameters
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
             Vd0xuqNcmTOeoqTqIq8Ql6i3BEiAIBkdoWYtiprgQgI"
                .to_string()
        })
    })
}

/// Verify `password` against `stored` (None, a locked `!` value or a
/// malformed value verify against the dummy hash and fail). Always does
/// exactly one argon2 verification. Err only when its memory could not be
/// allocated (53200).
pub fn verify_password(password: &str, stored: Option<&str>) -> StoreResult<bool> {
    let (candidate, real) = match stored {
        Some(s) if !s.starts_with('!') => match PasswordHash::new(s) {
            Ok(_) => (s, true),
            Err(_) => (dummy_hash(), false),
        },
        _ => (dummy_hash(), false),
    };
    let parsed = match PasswordHash::new(candidate) {
        Ok(p) => p,
        Err(_) => return Ok(false),
    };
    let ok = verify_phc(password, &parsed)?;
    Ok(ok && real)
}

// ------------------------------------------------------------- SQL surface --

fn register_customer_inner(
    email: Option<&str>,
    password: Option<&str>,
    full_name: Option<&str>,
) -> StoreResult<i64> {
    let email = normalize_email(email.ok_or_else(|| StoreError::null("email"))?)?;
    let password = password.ok_or_else(|| StoreError::null("password"))?;
    check_password(password)?;
    let full_name = check_full_name(full_name.ok_or_else(|| StoreError::null("full name"))?)?;

    // Say "already registered" before paying for a hash; the unique index is
    // still what guarantees it under concurrency (23505 from the INSERT).
    let taken = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM storefront.customer WHERE email = $1)",
        &[email.as_str().into()],
    )?
    .unwrap_or(false);
    if taken {
        return Err(email_taken(&email));
    }
    let hash = hash_password(password)?;
    let id = first_row(
        "INSERT INTO storefront.customer (email, password_hash, full_name)
         VALUES ($1, $2, $3)
         ON CONFLICT (email) DO NOTHING
         RETURNING customer_id",
        &[email.as_str().into(), hash.as_str().into(), full_name.as_str().into()],
        |row| row.get_one::<i64>(),
    )?
    .flatten();
    id.ok_or_else(|| email_taken(&email))
}

fn email_taken(email: &str) -> StoreError {
    StoreError::new(Kind::Unique, "email address is already registered")
        .detail(format!("Key (email)=({email}) already exists."))
        .hint("Sign in with authenticate(), or register with another address.")
}

/// Register a customer; returns the new customer id.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn register_customer(
    email: Option<&str>,
    password: Option<&str>,
    full_name: Option<&str>,
) -> Result<i64, ErrorReport> {
    report(register_customer_inner(email, password, full_name))
}

fn authenticate_inner(email: Option<&str>, password: Option<&str>) -> StoreResult<Option<i64>> {
    let (email, password) = match (email, password) {
        (Some(e), Some(p)) => (e, p),
        _ => return Ok(None),
    };
    // A malformed email cannot match; still spend one verification.
    let normalized = normalize_email(email).ok();
    let (id, stored) = match &normalized {
        Some(e) => first_row(
            "SELECT customer_id, password_hash FROM storefront.customer WHERE email = $1",
            &[e.as_str().into()],
            |row| row.get_two::<i64, String>(),
        )?
        .unwrap_or((None, None)),
        None => (None, None),
    };
    let pw_ok = password.len() <= MAX_PASSWORD_BYTES;
    let verified = verify_password(if pw_ok { password } else { "x" }, stored.as_deref())?;
    Ok(if verified && pw_ok { id } else { None })
}

/// The customer id for a correct email and password, else NULL.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(@extschema@, pg_temp)]
fn authenticate(email: Option<&str>, password: Option<&str>) -> Result<Option<i64>, ErrorReport> {
    report(authenticate_inner(email, password))
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn emails_are_normalized() {
        assert_eq!(normalize_email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        assert_eq!(normalize_email("a.b+tag@mail.example.co.uk").unwrap(), "a.b+tag@mail.example.co.uk");
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in [
            "", "   ", "plain", "a@b", "@example.com", "a@", "a@@example.com", "a b@example.com",
            "a@exa mple.com", "a@-example.com", "a@example..com", ".a@example.com", "a..b@example.com",
            "a@example.com-", "a@b@example.com",
        ] {
            let e = normalize_email(bad).unwrap_err();
            assert_eq!(e.kind, Kind::InvalidParameter, "{bad:?}");
            assert!(e.detail.is_some());
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn passwords_must_be_present_and_bounded() {
        assert_eq!(check_password("").unwrap_err().kind, Kind::InvalidParameter);
        assert!(check_password("x").is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn names_are_trimmed() {
        assert_eq!(check_full_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert!(check_full_name("   ").is_err());
    }

    #[test]
    fn hash_and_verify_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"));
        assert!(verify_password("correct horse", Some(&h)).unwrap());
        assert!(!verify_password("wrong horse", Some(&h)).unwrap());
        // same password, different salt
        assert_ne!(h, hash_password("correct horse").unwrap());
    }

    #[test]
    fn missing_locked_or_malformed_hashes_never_verify() {
        assert!(!verify_password("anything", None).unwrap());
        assert!(!verify_password("anything", Some("!locked")).unwrap());
        assert!(!verify_password("anything", Some("not a phc string")).unwrap());
    }

    /// The stock argon2 API allocates its working memory with Rust's
    /// infallible allocator: a hash asking for more than can be had aborts
    /// the backend. Ours reports 53200 instead.
    #[test]
    fn memory_that_cannot_be_had_is_an_error_not_an_abort() {
        let e = argon2_memory(usize::MAX / Block::SIZE).unwrap_err();
        assert_eq!(e.kind, Kind::OutOfMemory);
        // 4 TiB of working memory, as a tampered stored hash could ask for
        let greedy = "$argon2id$v=19$m=4294967295,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$\
                      Vd0xuqNcmTOeoqTqIq8Ql6i3BEiAIBkdoWYtiprgQgI";
        assert_eq!(verify_password("x", Some(greedy)).unwrap_err().kind, Kind::OutOfMemory);
    }

    #[test]
    fn hashes_from_the_stock_api_still_verify() {
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let stock = Argon2::default().hash_password(b"s3cret", &salt).unwrap().to_string();
        assert!(verify_password("s3cret", Some(&stock)).unwrap());
        assert!(!verify_password("s3cret!", Some(&stock)).unwrap());
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    type R = Result<(), pgrx::spi::Error>;

    #[pg_test]
    fn register_then_authenticate() -> R {
        let id = Spi::get_one::<i64>(
            "SELECT storefront.register_customer(' Ada@Example.COM ', 's3cret!', 'Ada Lovelace')",
        )?;
        assert!(id.is_some());
        let stored = Spi::get_two::<String, String>(
            "SELECT email, password_hash FROM storefront.customer",
        )?;
        assert_eq!(stored.0.as_deref(), Some("ada@example.com"));
        assert!(stored.1.is_some_and(|h| h.starts_with("$argon2id$")));
        let ok = Spi::get_one::<i64>("SELECT storefront.authenticate('ADA@example.com', 's3cret!')")?;
        assert_eq!(ok, id);
        let wrong = Spi::get_one::<i64>("SELECT storefront.authenticate('ada@example.com', 'nope')")?;
        assert_eq!(wrong, None);
        let unknown = Spi::get_one::<i64>("SELECT storefront.authenticate('bob@example.com', 's3cret!')")?;
        assert_eq!(unknown, None);
        let malformed = Spi::get_one::<i64>("SELECT storefront.authenticate('not an email', 's3cret!')")?;
        assert_eq!(malformed, None);
        let nulls = Spi::get_one::<i64>("SELECT storefront.authenticate(NULL, NULL)")?;
        assert_eq!(nulls, None);
        Ok(())
    }

    #[pg_test(error = "email address is already registered")]
    fn duplicate_email_is_refused() -> R {
        Spi::run("SELECT storefront.register_customer('ada@example.com', 'a', 'Ada')")?;
        Spi::run("SELECT storefront.register_customer('ADA@example.com', 'b', 'Ada again')")?;
        Ok(())
    }

    #[pg_test]
    fn locked_accounts_cannot_sign_in() -> R {
        Spi::run(
            "INSERT INTO storefront.customer (email, password_hash, full_name)
             VALUES ('locked@example.com', '!seed', 'Locked')",
        )?;
        let id = Spi::get_one::<i64>("SELECT storefront.authenticate('locked@example.com', '!seed')")?;
        assert_eq!(id, None);
        Ok(())
    }
}
