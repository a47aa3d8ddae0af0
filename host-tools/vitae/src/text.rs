//! Untrusted text on its way to a terminal.
//!
//! Names and strings from inputs (state_dict keys, blob op and model names, config values, file
//! paths) are printed in messages and tables. Raw, an ESC, BEL or CR in them could retitle or
//! clear the terminal or fake an `error:` line; [`escape`] renders every such character
//! visibly instead.

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
}
