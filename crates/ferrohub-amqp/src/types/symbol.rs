//! The AMQP `symbol` type.

use std::borrow::{Borrow, Cow};
use std::fmt;

/// An AMQP `symbol`: a name from a small vocabulary (error conditions, capabilities, annotation
/// keys, SASL mechanisms), ASCII by the specification.
///
/// Symbols the hub sends are usually constants, so a `Symbol` can borrow a `&'static str`
/// ([`Symbol::from_static`], usable in `const`) instead of allocating. The decoder accepts any
/// UTF-8, not only ASCII: being lenient costs nothing, and the bytes round-trip unchanged.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(Cow<'static, str>);

impl Symbol {
    /// A symbol borrowing a static string; `const`, so conditions and keys can be constants.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Cow::Borrowed(s))
    }

    /// A symbol owning `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Self(Cow::Owned(s.into()))
    }

    /// The symbol's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the symbol equals `s`, ignoring ASCII case (Azure's keys are matched that way by
    /// some SDKs).
    pub fn eq_ignore_ascii_case(&self, s: &str) -> bool {
        self.0.eq_ignore_ascii_case(s)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ":{:?}", self.as_str())
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for Symbol {
    fn from(s: &'static str) -> Self {
        Self::from_static(s)
    }
}

impl From<String> for Symbol {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl PartialEq<str> for Symbol {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Symbol {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}
