//! Diagnostics: an error or warning with `file:line:column`, what was
//! expected, and a hint.

use std::fmt;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

// === impl Diagnostic ===

impl Diagnostic {
    pub fn at(
        severity: Severity,
        file: &str,
        src: &str,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        let (line, column) = line_col(src, span.start);
        Self {
            severity,
            file: file.to_owned(),
            line,
            column,
            message: message.into(),
            hint,
        }
    }

    pub(crate) fn error_at_start(file: &str, message: String, hint: Option<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: file.to_owned(),
            line: 1,
            column: 1,
            message,
            hint,
        }
    }

    /// Turns a TOML syntax or schema error into a diagnostic. toml's message
    /// already says what was expected ("unknown field `x`, expected one of
    /// ..."); we keep its first line and add the position.
    pub(crate) fn from_toml(file: &str, src: &str, err: &toml::de::Error) -> Self {
        let span = err.span().unwrap_or(0..0);
        let message = err.message().trim().to_owned();
        let hint = if message.starts_with("unknown field") {
            Some("remove the key or fix its spelling; the README's configuration reference lists every key".into())
        } else {
            None
        };
        Self::at(Severity::Error, file, src, span, message, hint)
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, level, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn line_col_counts_from_one() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 3));
        assert_eq!(line_col(src, 1000), (3, 1));
    }
}
