//! Token lifetimes on the command line: `30s`, `15m`, `1h`, `2d`, or plain seconds.

/// Parses a lifetime into seconds. Zero, negative, fractional and overflowing values are
/// refused.
pub(crate) fn parse_ttl(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 's'),
    };
    let multiplier: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a lifetime; write 30s, 15m, 1h, 2d or a number of seconds"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too long a lifetime"))?;
    let secs = n
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too long a lifetime"))?;
    if secs == 0 {
        return Err("the lifetime must be at least one second".into());
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_ttl("30s"), Ok(30));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert_eq!(parse_ttl("3600"), Ok(3600));
        assert_eq!(parse_ttl(" 90 "), Ok(90));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "s",
            "h",
            "0",
            "0h",
            "-5",
            "1.5h",
            "1w",
            "1H",
            "h1",
            "1 h",
            "1h30m",
            "soon",
            "99999999999999999999",
            "999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
