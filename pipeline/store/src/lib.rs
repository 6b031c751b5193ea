//! The platform's metadata: one database chosen by URL (`sqlite://` for the embedded default,
//! `postgres://` in production), its versioned migrations, and identity (organisations,
//! users, API keys, email verification with an outbox). Every query is the same SQL on both
//! engines (sqlx's `Any` driver), so one test body runs against each.
//!
//! Uploads and results are sealed with AES-256-GCM under per-organisation data keys on their
//! way to the object store, and each carries a retention class and an expiry that the purge
//! honours.
//!
//! Times are Unix microseconds from a [`Clock`], which tests move by hand.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod clock;
pub mod crypto;
mod db;
mod error;
mod identity;
mod jobs;
mod ledger;
mod migrations;
mod rights;
mod role;
mod secret;
mod sniff;
mod storage;
mod uploads;

pub use clock::{Clock, ManualClock, SystemClock};
pub use crypto::MasterKey;
pub use db::{Db, DbKind};
pub use error::StoreError;
pub use identity::{ApiKey, KeyPrincipal, NewApiKey, Org, Signup, SignupDone, User};
pub use jobs::{Job, JobOutcome, JobState, NewJob};
pub use ledger::{LedgerEntry, Movement, credits};
pub use rights::{Erasure, Export};
pub use role::{Action, Role};
pub use secret::{hash_password, new_id, new_secret, sha256_hex, verify_password};
pub use sniff::{MediaKind, sniff};
pub use storage::{DAY_US, ObjectReader, ObjectWriter, PurgeRecord, RetentionClass, Storage, StoredObject};
pub use uploads::{MediaInfo, PurgeReport, Upload, UploadReader, UploadState};
