//! waygate's configuration: TOML → [`raw`] serde structs (unknown keys are
//! errors) → [`validate`] → a typed [`Config`] plus warnings, or every error
//! at once, each with `file:line:column`, what was expected and a hint.
//!
//! Parsing never binds a socket: building runtime state from a [`Config`] is
//! the proxy's job.

mod diag;
mod duration;
mod model;
pub mod raw;
mod validate;

use std::path::Path;

pub use diag::{Diagnostic, Severity};
pub use duration::{parse_duration, Duration};
pub use model::*;

/// A validated config and the warnings found while validating it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::error_at_start(
            &file,
            format!("cannot read config file: {e}"),
            Some("pass the right path with --config FILE".into()),
        )]
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&src, &file, base)
}

/// Parses and validates config text. `file` names it in diagnostics and
/// relative paths (error page templates, log files) are taken from `base`.
pub fn parse(src: &str, file: &str, base: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let raw: raw::RawConfig =
        toml::from_str(src).map_err(|e| vec![Diagnostic::from_toml(file, src, &e)])?;
    validate::validate(raw, src, file, base)
}
