//! `waygate check`: validate a config without starting anything.

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;
use waygate_config::Diagnostic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

pub(crate) fn check(path: &Path, format: Format) -> ExitCode {
    let (ok, errors, warnings) = match waygate_config::load(path) {
        Ok(loaded) => (true, Vec::new(), loaded.warnings),
        Err(diags) => {
            let (e, w) = diags.into_iter().partition(Diagnostic::is_error);
            (false, e, w)
        }
    };
    match format {
        Format::Text => {
            for e in &errors {
                eprintln!("{e}");
            }
            for w in &warnings {
                eprintln!("{w}");
            }
            if ok {
                println!(
                    "{}: valid ({} warning{})",
                    path.display(),
                    warnings.len(),
                    if warnings.len() == 1 { "" } else { "s" }
                );
            } else {
                eprintln!(
                    "{}: {} error(s), {} warning(s)",
                    path.display(),
                    errors.len(),
                    warnings.len()
                );
            }
        }
        Format::Json => {
            let list = |ds: &[Diagnostic]| -> Vec<serde_json::Value> {
                ds.iter()
                    .map(|d| {
                        serde_json::json!({
                            "file": d.file, "line": d.line, "column": d.column,
                            "message": d.message, "hint": d.hint,
                        })
                    })
                    .collect()
            };
            let out = serde_json::json!({
                "valid": ok,
                "errors": list(&errors),
                "warnings": list(&warnings),
            });
            println!("{out}");
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
