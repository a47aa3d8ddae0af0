//! Untrusted text on its way to a terminal.
//!
//! Names and strings from inputs (state_dict keys, blob op and model names, config values, file
//! paths) are printed in messages and tables. Raw, an ESC, BEL or CR in them could retitle or
//! clear the terminal or fake an `error:` line; [`escape`] renders every such character
//! visibly instead. [`report_lines`] is how an error and its causes are told, by the CLI and
//! the Python package alike.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: C0 and C1 control characters and DEL
/// (`char::is_control`), line and paragraph separators, and the bidirectional formatting
/// characters that reorder what follows them.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every [`is_unsafe`] character written as an escape: `\n`, `\r`, `\t`, or
/// `\u{1b}` (Rust's notation) for the others. Borrowed when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A JSON text with the characters `serde_json` leaves raw but a terminal would act on (DEL,
/// C1 controls, separators, bidirectional formatting) written as `\uXXXX` escapes: the same JSON
/// value, safe to print.
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_unsafe) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_unsafe(c) {
            // Outside strings JSON has only ASCII whitespace, which serde_json does not emit
            // when printing compactly; inside strings `\uXXXX` is the same character.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The lines of one error, every piece that can hold input text escaped (a key or name with a
/// newline or an escape sequence cannot fake a line or drive the terminal). A checkpoint that
/// does not match its architecture gives one line per problem; every other error one line.
pub fn error_lines(cause: &(dyn std::error::Error + 'static)) -> Vec<String> {
    use crate::reference::ModelError;
    use crate::validate::CheckpointReport;
    let report = cause.downcast_ref::<CheckpointReport>().or_else(|| {
        match cause.downcast_ref::<ModelError>() {
            Some(ModelError::Checkpoint(report)) => Some(report),
            _ => None,
        }
    });
    match report {
        // The one multi-line message: its lines are ours, the keys in them are escaped.
        Some(report) => {
            let mut lines = vec![format!(
                "checkpoint {} does not match architecture {}: {}",
                escape(&report.checkpoint),
                escape(&report.config),
                escape(&report.summary())
            )];
            lines.extend(
                report
                    .problems
                    .iter()
                    .map(|p| format!("  {}", escape(&p.to_string()))),
            );
            lines
        }
        None => vec![escape(&cause.to_string()).into_owned()],
    }
}

/// What `vitae` reports for a failure, without its leading `error: `: the outermost error's
/// lines ([`error_lines`]), then each underlying error's, the first of each as `  cause: …` (the
/// ruff convention). `chain` is the error then its sources (`anyhow::Error::chain`, or
/// `std::iter::successors(Some(e), |e| e.source())`). The Python package raises the same text.
pub fn report_lines<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, cause) in chain.into_iter().enumerate() {
        for (j, line) in error_lines(cause).into_iter().enumerate() {
            out.push(if i > 0 && j == 0 {
                format!("  cause: {line}")
            } else {
                line
            });
        }
    }
    out
}

/// `1234567` → `1,234,567`: byte counts in messages and reports.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(escape("layers.0.RC.attn"), Cow::Borrowed(_)));
        assert_eq!(escape("héllo → ok"), "héllo → ok");
        assert_eq!(
            escape("a\u{1b}]0;pwned\u{7}\rerror: fake\nb\u{9b}c\u{202e}d\u{7f}"),
            "a\\u{1b}]0;pwned\\u{7}\\rerror: fake\\nb\\u{9b}c\\u{202e}d\\u{7f}"
        );
        let json = serde_json::json!({"name": "x\u{1b}y\u{9b}z"}).to_string();
        let safe = json_for_terminal(&json);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["name"], "x\u{1b}y\u{9b}z");
    }

    #[test]
    fn report_lines_escape_and_mark_causes() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "reading m\u{1b}.vblob")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = Outer(std::io::Error::other("disk\nfull"));
        let lines = report_lines(std::iter::successors(
            Some(&error as &(dyn std::error::Error + 'static)),
            |e| e.source(),
        ));
        assert_eq!(lines, ["reading m\\u{1b}.vblob", "  cause: disk\\nfull"]);
    }
}
