//! Identity on both engines: the same test body against SQLite (a file) and a real
//! PostgreSQL server.

use std::sync::Arc;

use retail_store::{Db, DbKind, ManualClock, Role, Signup, StoreError};

fn signup(org: &str, email: &str) -> Signup {
    Signup {
        org_name: org.into(),
        name: "Ada".into(),
        email: email.into(),
        password: "a long enough password".into(),
        adult: true,
    }
}

/// The verification token from the newest mail to `to`.
async fn mailed_token(db: &Db, to: &str) -> String {
    let mail = db.outbox(to).await.unwrap();
    let body = &mail.last().expect("a verification mail").2;
    body.split_whitespace().find(|w| w.starts_with("ev_")).expect("a token in the mail").to_owned()
}

async fn identity_body(db: Db, clock: Arc<ManualClock>) {
    assert_eq!(db.schema_version().await.unwrap(), 3);
    // Refused without the 18+ attestation, and nothing is stored.
    let minor = Signup { adult: false, ..signup("Kids", "kid@example.com") };
    let err = db.signup(&minor).await.unwrap_err();
    assert!(err.to_string().contains("18 or older"), "{err}");
    assert!(matches!(db.login("kid@example.com", "a long enough password").await, Err(StoreError::BadLogin)));
    for (bad, why) in [
        (Signup { email: "not-an-email".into(), ..signup("A", "x") }, "email"),
        (Signup { password: "short".into(), ..signup("A", "a@example.com") }, "password"),
        (Signup { org_name: " ".into(), ..signup("A", "a@example.com") }, "organisation"),
    ] {
        let err = db.signup(&bad).await.unwrap_err();
        assert!(err.to_string().starts_with(why), "{err}");
    }

    let a = db.signup(&signup("Acme", "Ada@Example.com")).await.unwrap();
    assert_eq!(a.user.role, Role::Owner);
    assert_eq!(a.user.email, "ada@example.com");
    assert!(!a.user.email_verified);
    let dup = db.signup(&signup("Other", "ada@example.com")).await.unwrap_err();
    assert!(matches!(dup, StoreError::Conflict { .. }), "{dup}");

    // Login: the same answer for a wrong password and an unknown email.
    let user = db.login("ADA@example.com", "a long enough password").await.unwrap();
    assert_eq!(user.id, a.user.id);
    assert!(matches!(db.login("ada@example.com", "wrong password!!").await, Err(StoreError::BadLogin)));
    assert!(matches!(db.login("nobody@example.com", "a long enough password").await, Err(StoreError::BadLogin)));

    // Email verification: once, within 48 hours.
    let token = mailed_token(&db, "ada@example.com").await;
    assert!(db.verify_email(&token).await.unwrap().email_verified);
    assert!(db.verify_email(&token).await.is_err(), "a token works once");
    let bob =
        db.add_user(&a.org.id, "Bob", "bob@example.com", "another long password", Role::Viewer, true).await.unwrap();
    let late = mailed_token(&db, "bob@example.com").await;
    clock.advance_s(49 * 3600);
    assert!(db.verify_email(&late).await.is_err(), "an expired token works");
    assert!(!db.user(&a.org.id, &bob.id).await.unwrap().email_verified);

    // API keys: the secret once, its SHA-256 stored, scoped, revocable, last use noted.
    let made = db.create_api_key(&a.org.id, "ci", Role::Analyst, &a.user.id, Role::Owner).await.unwrap();
    let secret = made.secret.expose().to_owned();
    assert!(secret.starts_with("rk_"));
    let who = db.authenticate_key(&secret).await.unwrap().expect("the key works");
    assert_eq!((who.org_id.as_str(), who.role), (a.org.id.as_str(), Role::Analyst));
    let listed = db.api_keys(&a.org.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_us.is_some());
    assert!(!format!("{listed:?}").contains(&secret), "a listed key shows its secret");
    let escalate = db.create_api_key(&a.org.id, "up", Role::Owner, &bob.id, Role::Admin).await.unwrap_err();
    assert!(escalate.to_string().contains("cannot make a key"), "{escalate}");

    // Another organisation sees none of it, and cannot revoke it.
    let b = db.signup(&signup("Beta", "bea@example.com")).await.unwrap();
    assert!(db.api_keys(&b.org.id).await.unwrap().is_empty());
    assert!(matches!(db.revoke_api_key(&b.org.id, &made.key.id).await, Err(StoreError::NotFound { .. })));
    assert!(db.user(&b.org.id, &a.user.id).await.is_err());
    assert_eq!(db.users(&b.org.id).await.unwrap().len(), 1);
    db.revoke_api_key(&a.org.id, &made.key.id).await.unwrap();
    assert!(db.authenticate_key(&secret).await.unwrap().is_none(), "a revoked key works");
    assert!(db.authenticate_key("rk_made_up").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta/retail.db").display());
    let clock = Arc::new(ManualClock::starting_now());
    let db = Db::open_with_clock(&url, clock.clone()).await.unwrap();
    assert_eq!(db.kind(), DbKind::Sqlite);
    identity_body(db, clock).await;
    // Opening again migrates nothing and keeps the data.
    let again = Db::open(&url).await.unwrap();
    assert_eq!(again.schema_version().await.unwrap(), 3);
    assert!(again.login("ada@example.com", "a long enough password").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_on_postgres() {
    let server = retail_testkit::Postgres::start();
    let url = server.new_database();
    let clock = Arc::new(ManualClock::starting_now());
    // Two servers starting at once: one migrates, the other waits and finds it done.
    let (db, other) = tokio::join!(Db::open_with_clock(&url, clock.clone()), Db::open(&url));
    let (db, other) = (db.unwrap(), other.unwrap());
    assert_eq!(db.kind(), DbKind::Postgres);
    assert_eq!(other.schema_version().await.unwrap(), 3);
    identity_body(db, clock).await;
}

#[tokio::test]
async fn bad_urls_say_what_is_wrong_without_the_password() {
    let err = Db::open("mysql://root:hunter2@db/x").await.err().unwrap().to_string();
    assert!(err.contains("expected sqlite:// or postgres://"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let port = retail_testkit::free_port();
    let err = Db::open(&format!("postgres://app:hunter2@127.0.0.1:{port}/x")).await.err().unwrap().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}
