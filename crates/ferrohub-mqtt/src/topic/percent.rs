//! Percent-encoding as Azure IoT Hub uses it in property bags and MQTT user names.
//!
//! Decoding only touches `%XX` (either hex case); `+` stays a `+`, unlike HTML form decoding,
//! because the SDKs encode spaces as `%20`. Encoding keeps the RFC 3986 unreserved characters
//! (`A–Z a–z 0–9 - . _ ~`) and writes everything else as upper-case `%XX`, which is what the hub
//! itself sends (`%24.mid`, `%2F`, `%3A`).

use std::borrow::Cow;

use crate::topic::PropertyBagError;

/// Decodes `s`, failing on a `%` not followed by two hex digits or on a result that is not UTF-8.
pub(crate) fn decode_strict(s: &str) -> Result<Cow<'_, str>, PropertyBagError> {
    if !s.contains('%') {
        return Ok(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(hex_pair)
                .ok_or(PropertyBagError::MalformedEscape { offset: i })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PropertyBagError::InvalidUtf8)
}

/// Decodes `s` forgivingly: a malformed escape stays as written, invalid UTF-8 becomes U+FFFD.
pub(crate) fn decode_lenient(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match bytes.get(i + 1..i + 3).and_then(hex_pair) {
            Some(byte) if b == b'%' => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends `s` to `out`, escaping everything but the unreserved characters.
pub(crate) fn encode_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    match pair {
        [hi, lo] => Some(hex_digit(*hi)? << 4 | hex_digit(*lo)?),
        _ => None,
    }
}

fn hex_digit(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_decoding() {
        assert_eq!(decode_strict("a%20b").as_deref(), Ok("a b"));
        assert_eq!(decode_strict("%24.mid").as_deref(), Ok("$.mid"));
        assert_eq!(decode_strict("%2f%2F").as_deref(), Ok("//"));
        assert_eq!(decode_strict("a+b").as_deref(), Ok("a+b"));
        assert_eq!(decode_strict("%C3%A9").as_deref(), Ok("é"));
        assert_eq!(
            decode_strict("ab%2").as_deref(),
            Err(&PropertyBagError::MalformedEscape { offset: 2 })
        );
        assert_eq!(
            decode_strict("%zz").as_deref(),
            Err(&PropertyBagError::MalformedEscape { offset: 0 })
        );
        assert_eq!(
            decode_strict("%").as_deref(),
            Err(&PropertyBagError::MalformedEscape { offset: 0 })
        );
        assert_eq!(
            decode_strict("%FF").as_deref(),
            Err(&PropertyBagError::InvalidUtf8)
        );
    }

    #[test]
    fn lenient_decoding() {
        assert_eq!(decode_lenient("a%2Fb%2fc"), "a/b/c");
        assert_eq!(decode_lenient("100%"), "100%");
        assert_eq!(decode_lenient("%zz%41"), "%zzA");
        assert_eq!(decode_lenient("%FF"), "\u{FFFD}");
    }

    #[test]
    fn encoding() {
        let mut out = String::new();
        encode_into("$.mid a/b&c=d%e+f#g~h-i_j.kÉ:", &mut out);
        assert_eq!(out, "%24.mid%20a%2Fb%26c%3Dd%25e%2Bf%23g~h-i_j.k%C3%89%3A");
        assert_eq!(
            decode_strict(&out).as_deref(),
            Ok("$.mid a/b&c=d%e+f#g~h-i_j.kÉ:")
        );
    }
}
