//! Organisations, users, API keys, email verification.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::db_err;
use crate::{Db, Role, StoreError, hash_password, new_id, new_secret, sha256_hex, verify_password};

/// How long an email verification link works.
const EMAIL_TOKEN_TTL_US: i64 = 48 * 3600 * 1_000_000;
/// Days uploads and their results are kept unless the organisation says otherwise.
pub const DEFAULT_UPLOAD_RETENTION_DAYS: i64 = 90;

#[derive(Clone, Debug, Serialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_us: i64,
    pub upload_retention_days: i64,
}

/// A user as the API shows it: never the password hash.
#[derive(Clone, Debug, Serialize)]
pub struct User {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub email_verified: bool,
    pub created_us: i64,
}

/// What a new organisation's first user (its owner) gives at signup.
#[derive(Clone, Debug)]
pub struct Signup {
    pub org_name: String,
    pub name: String,
    pub email: String,
    pub password: String,
    /// The user attests being 18 or older; signup is refused without it.
    pub adult: bool,
}

#[derive(Clone, Debug)]
pub struct SignupDone {
    pub org: Org,
    pub user: User,
}

/// An API key as listed: never its secret.
#[derive(Clone, Debug, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub role: Role,
    pub created_by: String,
    pub created_us: i64,
    pub revoked_us: Option<i64>,
    pub last_used_us: Option<i64>,
}

/// A key just made: the secret is shown this once and stored only as its SHA-256.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub key: ApiKey,
    pub secret: retail_core::Secret,
}

/// Who an API key speaks for.
#[derive(Clone, Debug)]
pub struct KeyPrincipal {
    pub key_id: String,
    pub org_id: String,
    pub role: Role,
}

const MIN_PASSWORD_CHARS: usize = 10;
const MAX_PASSWORD_BYTES: usize = 1024;
const MAX_NAME_CHARS: usize = 200;

fn check_text(field: &str, value: &str) -> Result<String, StoreError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > MAX_NAME_CHARS || v.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!("{field}: 1 to {MAX_NAME_CHARS} printable characters")));
    }
    Ok(v.to_owned())
}

/// Lower-cased, and shaped like an address (one `@`, a dot in the domain).
fn check_email(email: &str) -> Result<String, StoreError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && e.matches('@').count() == 1
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(StoreError::Invalid("email: not an email address".into()));
    }
    Ok(e)
}

fn check_password(password: &str) -> Result<(), StoreError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(StoreError::Invalid(format!(
            "password: at least {MIN_PASSWORD_CHARS} characters (and at most {MAX_PASSWORD_BYTES} bytes)"
        )));
    }
    Ok(())
}

fn role_of(row: &AnyRow, column: &str) -> Result<Role, StoreError> {
    let text: String = row.try_get(column).map_err(db_err("read role"))?;
    Role::parse(&text).ok_or_else(|| StoreError::Invalid(format!("unknown role {text} in the database")))
}

fn user_from(row: &AnyRow) -> Result<User, StoreError> {
    let get = db_err("read user");
    Ok(User {
        id: row.try_get("id").map_err(&get)?,
        org_id: row.try_get("org_id").map_err(&get)?,
        name: row.try_get("name").map_err(&get)?,
        email: row.try_get("email").map_err(&get)?,
        role: role_of(row, "role")?,
        email_verified: row.try_get::<Option<i64>, _>("email_verified_us").map_err(&get)?.is_some(),
        created_us: row.try_get("created_us").map_err(&get)?,
    })
}

fn key_from(row: &AnyRow) -> Result<ApiKey, StoreError> {
    let get = db_err("read api key");
    Ok(ApiKey {
        id: row.try_get("id").map_err(&get)?,
        org_id: row.try_get("org_id").map_err(&get)?,
        name: row.try_get("name").map_err(&get)?,
        role: role_of(row, "role")?,
        created_by: row.try_get("created_by").map_err(&get)?,
        created_us: row.try_get("created_us").map_err(&get)?,
        revoked_us: row.try_get("revoked_us").map_err(&get)?,
        last_used_us: row.try_get("last_used_us").map_err(&get)?,
    })
}

const USER_COLUMNS: &str = "id, org_id, name, email, role, email_verified_us, created_us";
const KEY_COLUMNS: &str = "id, org_id, name, role, created_by, created_us, revoked_us, last_used_us";

impl Db {
    /// A new organisation with `s` as its owner, and a verification mail in the outbox.
    pub async fn signup(&self, s: &Signup) -> Result<SignupDone, StoreError> {
        if !s.adult {
            return Err(StoreError::Invalid(
                "adult: you must be 18 or older to sign up (attest it with \"adult\": true)".into(),
            ));
        }
        let org_name = check_text("organisation", &s.org_name)?;
        let name = check_text("name", &s.name)?;
        let email = check_email(&s.email)?;
        check_password(&s.password)?;
        let hash = hash_blocking(s.password.clone()).await?;
        let now = self.now_us();
        let org = Org {
            id: new_id("org"),
            name: org_name,
            created_us: now,
            upload_retention_days: DEFAULT_UPLOAD_RETENTION_DAYS,
        };
        let user = User {
            id: new_id("usr"),
            org_id: org.id.clone(),
            name,
            email,
            role: Role::Owner,
            email_verified: false,
            created_us: now,
        };
        let mut tx = self.pool.begin().await.map_err(db_err("signup"))?;
        sqlx::query("INSERT INTO orgs (id, name, created_us, upload_retention_days) VALUES ($1, $2, $3, $4)")
            .bind(&org.id)
            .bind(&org.name)
            .bind(org.created_us)
            .bind(org.upload_retention_days)
            .execute(&mut *tx)
            .await
            .map_err(db_err("create organisation"))?;
        insert_user(&mut tx, &user, &hash, now).await?;
        queue_verification(&mut tx, &user, now).await?;
        tx.commit().await.map_err(db_err("signup"))?;
        Ok(SignupDone { org, user })
    }

    /// Adds a member to `org_id` (by an admin); they verify their email like an owner does.
    pub async fn add_user(
        &self,
        org_id: &str,
        name: &str,
        email: &str,
        password: &str,
        role: Role,
        adult: bool,
    ) -> Result<User, StoreError> {
        if !adult {
            return Err(StoreError::Invalid(
                "adult: members must be 18 or older (attest it with \"adult\": true)".into(),
            ));
        }
        let name = check_text("name", name)?;
        let email = check_email(email)?;
        check_password(password)?;
        let hash = hash_blocking(password.to_owned()).await?;
        let now = self.now_us();
        let user = User {
            id: new_id("usr"),
            org_id: org_id.to_owned(),
            name,
            email,
            role,
            email_verified: false,
            created_us: now,
        };
        let mut tx = self.pool.begin().await.map_err(db_err("add user"))?;
        insert_user(&mut tx, &user, &hash, now).await?;
        queue_verification(&mut tx, &user, now).await?;
        tx.commit().await.map_err(db_err("add user"))?;
        Ok(user)
    }

    /// The user with this email and password; the same error whether the email or the
    /// password is wrong, and the hash is checked either way (no timing difference).
    pub async fn login(&self, email: &str, password: &str) -> Result<User, StoreError> {
        let email = email.trim().to_lowercase();
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"))
            .bind(&email)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("login"))?;
        let hash: String = match &row {
            Some(r) => r.try_get("password_hash").map_err(db_err("login"))?,
            None => DUMMY_HASH.clone(),
        };
        let ok = verify_blocking(password.to_owned(), hash).await;
        match row {
            Some(r) if ok => user_from(&r),
            _ => Err(StoreError::BadLogin),
        }
    }

    pub async fn user(&self, org_id: &str, user_id: &str) -> Result<User, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND org_id = $2"))
            .bind(user_id)
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("read user"))?;
        row.as_ref()
            .map(user_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound { what: "user", id: user_id.to_owned() })
    }

    pub async fn users(&self, org_id: &str) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE org_id = $1 ORDER BY created_us, id"))
            .bind(org_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("list users"))?;
        rows.iter().map(user_from).collect()
    }

    pub async fn org(&self, org_id: &str) -> Result<Org, StoreError> {
        let row = sqlx::query("SELECT id, name, created_us, upload_retention_days FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("read organisation"))?
            .ok_or_else(|| StoreError::NotFound { what: "organisation", id: org_id.to_owned() })?;
        let get = db_err("read organisation");
        Ok(Org {
            id: row.try_get("id").map_err(&get)?,
            name: row.try_get("name").map_err(&get)?,
            created_us: row.try_get("created_us").map_err(&get)?,
            upload_retention_days: row.try_get("upload_retention_days").map_err(&get)?,
        })
    }

    /// Marks the email of the token's user verified; a token works once, within 48 hours.
    pub async fn verify_email(&self, token: &str) -> Result<User, StoreError> {
        let digest = sha256_hex(token);
        let mut tx = self.pool.begin().await.map_err(db_err("verify email"))?;
        let row = sqlx::query("DELETE FROM email_tokens WHERE token_sha256 = $1 RETURNING user_id, expires_us")
            .bind(&digest)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("verify email"))?;
        let bad = || StoreError::Invalid("token: unknown or expired verification token".into());
        let row = row.ok_or_else(bad)?;
        let (user_id, expires): (String, i64) = (
            row.try_get("user_id").map_err(db_err("verify email"))?,
            row.try_get("expires_us").map_err(db_err("verify email"))?,
        );
        if expires < self.now_us() {
            tx.commit().await.map_err(db_err("verify email"))?; // the expired token goes either way
            return Err(bad());
        }
        let row =
            sqlx::query(&format!("UPDATE users SET email_verified_us = $1 WHERE id = $2 RETURNING {USER_COLUMNS}"))
                .bind(self.now_us())
                .bind(&user_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err("verify email"))?;
        tx.commit().await.map_err(db_err("verify email"))?;
        user_from(&row)
    }

    /// Mail waiting to be sent (newest last): (to, subject, body).
    pub async fn outbox(&self, to: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT to_address, subject, body FROM outbox WHERE to_address = $1 ORDER BY created_us, id")
                .bind(to.trim().to_lowercase())
                .fetch_all(&self.pool)
                .await
                .map_err(db_err("read outbox"))?;
        rows.iter()
            .map(|r| {
                let get = db_err("read outbox");
                Ok((
                    r.try_get("to_address").map_err(&get)?,
                    r.try_get("subject").map_err(&get)?,
                    r.try_get("body").map_err(&get)?,
                ))
            })
            .collect()
    }

    /// A new key for `org_id` with `role`, made by `created_by` (whose role must be at least
    /// `role`: nobody hands out more than they have).
    pub async fn create_api_key(
        &self,
        org_id: &str,
        name: &str,
        role: Role,
        created_by: &str,
        creator_role: Role,
    ) -> Result<NewApiKey, StoreError> {
        if role > creator_role {
            return Err(StoreError::Invalid(format!(
                "role: a {} cannot make a key with role {}",
                creator_role.as_str(),
                role.as_str()
            )));
        }
        let name = check_text("name", name)?;
        let secret = new_secret("rk");
        let key = ApiKey {
            id: new_id("key"),
            org_id: org_id.to_owned(),
            name,
            role,
            created_by: created_by.to_owned(),
            created_us: self.now_us(),
            revoked_us: None,
            last_used_us: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, name, role, secret_sha256, created_by, created_us) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.org_id)
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(sha256_hex(&secret))
        .bind(&key.created_by)
        .bind(key.created_us)
        .execute(&self.pool)
        .await
        .map_err(db_err("create api key"))?;
        Ok(NewApiKey { key, secret: retail_core::Secret::new(secret) })
    }

    pub async fn api_keys(&self, org_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows =
            sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY created_us, id"))
                .bind(org_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err("list api keys"))?;
        rows.iter().map(key_from).collect()
    }

    /// Revokes a key of `org_id`; a key of another organisation is "not found".
    pub async fn revoke_api_key(&self, org_id: &str, key_id: &str) -> Result<ApiKey, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE api_keys SET revoked_us = COALESCE(revoked_us, $1) WHERE id = $2 AND org_id = $3 RETURNING {KEY_COLUMNS}"
        ))
        .bind(self.now_us())
        .bind(key_id)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("revoke api key"))?;
        row.as_ref()
            .map(key_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound { what: "api key", id: key_id.to_owned() })
    }

    /// The key whose secret this is, if it exists and is not revoked; notes its use.
    pub async fn authenticate_key(&self, secret: &str) -> Result<Option<KeyPrincipal>, StoreError> {
        let failed = db_err("authenticate api key");
        let row = sqlx::query(
            "SELECT id, org_id, role, last_used_us FROM api_keys WHERE secret_sha256 = $1 AND revoked_us IS NULL",
        )
        .bind(sha256_hex(secret))
        .fetch_optional(&self.pool)
        .await
        .map_err(&failed)?;
        let Some(row) = row else { return Ok(None) };
        let key = KeyPrincipal {
            key_id: row.try_get("id").map_err(&failed)?,
            org_id: row.try_get("org_id").map_err(&failed)?,
            role: role_of(&row, "role")?,
        };
        // Last use to the minute: a write on every request would queue every request of
        // every key behind one another on SQLite's single writer.
        let last: Option<i64> = row.try_get("last_used_us").map_err(&failed)?;
        let now = self.now_us();
        if last.is_none_or(|t| now - t >= LAST_USED_GRANULARITY_US) {
            sqlx::query("UPDATE api_keys SET last_used_us = $1 WHERE id = $2")
                .bind(now)
                .bind(&key.key_id)
                .execute(&self.pool)
                .await
                .map_err(&failed)?;
        }
        Ok(Some(key))
    }
}

/// How fresh an API key's last-used time is kept.
const LAST_USED_GRANULARITY_US: i64 = 60 * 1_000_000;

/// argon2id takes tens of milliseconds of CPU on purpose: off the async threads.
async fn hash_blocking(password: String) -> Result<String, StoreError> {
    tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(|e| StoreError::Hash(e.to_string()))?
}

async fn verify_blocking(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false)
}

/// Checked when the email is unknown, so that a wrong email costs what a wrong password does.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("not anybody's password").unwrap_or_default());

async fn insert_user(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: &User,
    hash: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, org_id, name, email, password_hash, role, adult_attested_us, created_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&user.id)
    .bind(&user.org_id)
    .bind(&user.name)
    .bind(&user.email)
    .bind(hash)
    .bind(user.role.as_str())
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| match db_err("create user")(e) {
        StoreError::Conflict { .. } => StoreError::Conflict { what: format!("a user with email {}", user.email) },
        other => other,
    })?;
    Ok(())
}

/// A verification token, stored as its SHA-256, mailed (through the outbox) in clear.
async fn queue_verification(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: &User,
    now: i64,
) -> Result<(), StoreError> {
    let token = new_secret("ev");
    sqlx::query("INSERT INTO email_tokens (token_sha256, user_id, expires_us) VALUES ($1, $2, $3)")
        .bind(sha256_hex(&token))
        .bind(&user.id)
        .bind(now + EMAIL_TOKEN_TTL_US)
        .execute(&mut **tx)
        .await
        .map_err(db_err("create verification token"))?;
    sqlx::query("INSERT INTO outbox (id, to_address, subject, body, created_us) VALUES ($1, $2, $3, $4, $5)")
        .bind(new_id("mail"))
        .bind(&user.email)
        .bind("Verify your email for Retail AI")
        .bind(format!(
            "Hello {},\n\nconfirm your address by posting this token to /v1/verify-email within 48 hours:\n\n{token}\n",
            user.name
        ))
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db_err("queue verification mail"))?;
    Ok(())
}
