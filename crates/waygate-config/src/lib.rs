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
    let (file, src) = read(path)?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&src, &file, base)
}

/// Reads only the `[admin]` table of the config file at `path`: how to
/// reach a running gateway even when the rest of the file is invalid (as
/// it is when `waygate reload` is to report a rejected config).
pub fn load_admin(path: &Path) -> Result<Option<AdminConfig>, Vec<Diagnostic>> {
    #[derive(serde::Deserialize)]
    struct AdminOnly {
        admin: Option<raw::RawAdmin>,
    }
    let (file, src) = read(path)?;
    let raw: AdminOnly =
        toml::from_str(&src).map_err(|e| vec![Diagnostic::from_toml(&file, &src, &e)])?;
    validate::admin_only(raw.admin, &src, &file)
}

/// The file's name for diagnostics, and its text.
fn read(path: &Path) -> Result<(String, String), Vec<Diagnostic>> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => Ok((file, src)),
        Err(e) => Err(vec![Diagnostic::error_at_start(
            &file,
            format!("cannot read config file: {e}"),
            Some("pass the right path with --config FILE".into()),
        )]),
    }
}

/// Parses and validates config text. `file` names it in diagnostics and
/// relative paths (error page templates, log files) are taken from `base`.
pub fn parse(src: &str, file: &str, base: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let raw: raw::RawConfig =
        toml::from_str(src).map_err(|e| vec![Diagnostic::from_toml(file, src, &e)])?;
    validate::validate(raw, src, file, base)
}
