//! Amounts and ids on the wire are decimal strings; this is the one check of their shape.
//! `str::parse` alone would take `+1`; here only ASCII digits pass.

/// Whether `text` is one or more ASCII decimal digits: no sign, space, point or exponent.
pub fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `text` as an `i64` when it [`is_digits`] and fits (so never negative).
pub fn parse_i64(text: &str) -> Option<i64> {
    if !is_digits(text) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_digits_that_fit_parse() {
        // Proves signs, spaces, points, exponents and overflow are refused.
        assert_eq!(parse_i64("0"), Some(0));
        assert_eq!(parse_i64("007"), Some(7));
        assert_eq!(parse_i64("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "9223372036854775808",
            "١",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
        assert!(is_digits("123456789012345678901234567890"));
        assert!(!is_digits("12a"));
    }
}
