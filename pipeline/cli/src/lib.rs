//! The `retail-ai` command's library: the `analyze` front end and `doctor`. The pipeline
//! itself is `retail-runtime`.

pub mod analyze;
pub mod doctor;
pub mod evaluate;
pub mod jobs;
pub mod serve;
pub mod worker;

pub use analyze::render_table;
pub use retail_runtime::{Config, ConfigError, FilesRequest, ModelChoice, RuntimeError, Summary, analyze_files};
