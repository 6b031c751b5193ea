//! The `retail-ai` command's library: config, the `analyze` job, `doctor`.

pub mod analyze;
pub mod config;
pub mod doctor;
mod draw;

pub use analyze::{AnalyzeError, AnalyzeRequest, ModelChoice, Summary, analyze, render_table};
pub use config::{Config, ConfigError};
