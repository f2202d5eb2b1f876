//! The twin's ETag and the `If-Match` precondition of service writes (contract §2.3, §3).
//!
//! A twin's ETag is base64 of its counter as 8 big-endian bytes: counter 1 is `AAAAAAAAAAE=`,
//! 7 is `AAAAAAAAAAc=`, 11 is `AAAAAAAAAAs=` (observed on real hubs). The counter starts at 1 and
//! grows by one per service write of tags or desired properties; reported updates leave it alone.
//! It is unrelated to the device identity's ETag (`deviceEtag`, base64 of a decimal string).

use std::fmt;

/// A twin's ETag: its write counter, shown as base64 of 8 big-endian bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TwinEtag(u64);

impl TwinEtag {
    /// The ETag of a new twin (counter 1, `AAAAAAAAAAE=`).
    pub const INITIAL: TwinEtag = TwinEtag(1);

    /// The ETag with this counter.
    pub const fn from_counter(counter: u64) -> Self {
        TwinEtag(counter)
    }

    /// The counter: 1 for a new twin, +1 per service write of tags or desired properties. Part of
    /// the twin's `version` (contract §2.3).
    pub const fn counter(self) -> u64 {
        self.0
    }

    /// The ETag after one more service write.
    pub(crate) const fn next(self) -> Self {
        TwinEtag(self.0.saturating_add(1))
    }

    /// The ETag as an HTTP `ETag` header value: quoted (`"AAAAAAAAAAE="`).
    pub fn quoted(self) -> String {
        format!("\"{self}\"")
    }
}

impl fmt::Display for TwinEtag {
    /// The unquoted form, as in the twin's `etag` field: `AAAAAAAAAAE=`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64(&self.0.to_be_bytes()))
    }
}

impl fmt::Debug for TwinEtag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TwinEtag({}, {self})", self.0)
    }
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The precondition of a service write, from the `If-Match` header (or a twin job's `etag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`, or no header at all: whatever the current ETag is.
    Any,
    /// Only if the current ETag is this one (unquoted).
    ETag(String),
}

impl IfMatch {
    /// Parses a header value. Python sends `"*"` or `"<etag>"` (always quoted), Node quotes
    /// what it is given; `*`, `"*"`, `"AAAAAAAAAAE="`, `AAAAAAAAAAE=` and `W/"AAAAAAAAAAE="` are
    /// all accepted. Anything else is an ETag that will simply not match.
    pub fn parse(header: &str) -> Self {
        match unquote(header) {
            "*" => IfMatch::Any,
            etag => IfMatch::ETag(etag.to_owned()),
        }
    }

    /// Whether `etag` satisfies the precondition.
    pub fn matches(&self, etag: TwinEtag) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::ETag(expected) => *expected == etag.to_string(),
        }
    }
}

/// Strips whitespace, a weak-validator prefix `W/` and one pair of surrounding double quotes.
fn unquote(s: &str) -> &str {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_match_real_hub_values() {
        assert_eq!(TwinEtag::INITIAL.to_string(), "AAAAAAAAAAE=");
        assert_eq!(TwinEtag::from_counter(7).to_string(), "AAAAAAAAAAc=");
        assert_eq!(TwinEtag::from_counter(11).to_string(), "AAAAAAAAAAs=");
        assert_eq!(TwinEtag::from_counter(256).to_string(), "AAAAAAAAAQA=");
        assert_eq!(TwinEtag::INITIAL.quoted(), "\"AAAAAAAAAAE=\"");
        assert_eq!(TwinEtag::INITIAL.next().counter(), 2);
    }

    #[test]
    fn base64_follows_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff; 8]), "//////////8=");
    }

    #[test]
    fn if_match_forms() {
        let e = TwinEtag::from_counter(7);
        assert!(IfMatch::parse("*").matches(e));
        assert!(IfMatch::parse("\"*\"").matches(e));
        assert!(IfMatch::parse("\"AAAAAAAAAAc=\"").matches(e));
        assert!(IfMatch::parse(" AAAAAAAAAAc= ").matches(e));
        assert!(IfMatch::parse("W/\"AAAAAAAAAAc=\"").matches(e));
        assert!(!IfMatch::parse("\"AAAAAAAAAAE=\"").matches(e));
        assert!(!IfMatch::parse("").matches(e));
        assert_eq!(IfMatch::parse("\"*\""), IfMatch::Any);
    }
}
