//! Lock tokens: random (version 4) GUIDs in their hyphenated lowercase form, as Azure's are.
//!
//! HTTPS clients see the token as a message's `ETag`; AMQP feedback receivers parse the delivery
//! tag as a GUID, so a token must stay GUID-shaped.

use crate::error::C2dError;

/// A new random token, such as `1b4e28ba-2fa1-41d2-883f-0016d3cca427`.
pub(crate) fn new() -> Result<String, C2dError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| C2dError::Entropy(e.to_string()))?;
    Ok(format_guid(b))
}

/// Formats 16 bytes as a version 4, RFC 4122 variant GUID (setting those bits).
fn format_guid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex =
        |r: std::ops::Range<usize>| -> String { b[r].iter().map(|x| format!("{x:02x}")).collect() };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_guids_and_distinct() {
        let a = new().expect("entropy");
        let b = new().expect("entropy");
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert!(groups[2].starts_with('4'));
    }

    #[test]
    fn format_is_fixed() {
        assert_eq!(
            format_guid([0xff; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        assert_eq!(format_guid([0; 16]), "00000000-0000-4000-8000-000000000000");
    }
}
