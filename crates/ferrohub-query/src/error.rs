//! Errors: why a query or condition does not parse, and why a continuation token is refused.
//!
//! The `Display` text is what the hub puts after `ErrorCode:ArgumentInvalid;` in its 400
//! answer, so it names the construct and where it is, in words a query author understands.

use std::fmt;

/// Where in the query text something is: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (the end of the text when past it).
    pub(crate) fn of(text: &str, offset: usize) -> Location {
        let mut line = 1;
        let mut column = 1;
        for (i, c) in text.char_indices() {
            if i >= offset {
                break;
            }
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        Location { line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why query text was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}{}", match .location { Some(l) => format!(" (at {l})"), None => String::new() })]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// Where (absent for errors about the text as a whole, such as its length).
    pub location: Option<Location>,
}

/// What is wrong with query text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The text is longer than Azure allows.
    #[error("The query is {length} characters long; at most {max} are allowed.")]
    TooLong {
        /// The text's length in characters.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// The text holds no query (or no condition).
    #[error("The query is empty.")]
    Empty,
    /// A character that no token starts with.
    #[error("Unexpected character '{0}'.")]
    UnexpectedCharacter(char),
    /// A string literal without its closing quote.
    #[error("The string starting here is not terminated.")]
    UnterminatedString,
    /// A backslash escape the language does not have, or a bad `\u` escape.
    #[error(
        "Invalid escape sequence '{0}' in a string; allowed are \\' \\\" \\\\ \\/ \\b \\f \\n \\r \\t and \\uXXXX."
    )]
    InvalidEscape(String),
    /// A number literal that is malformed or out of range.
    #[error("Invalid number '{0}'.")]
    InvalidNumber(String),
    /// The parser wanted something else here.
    #[error("Expected {expected} but found {found}.")]
    Expected {
        /// What would have been accepted.
        expected: String,
        /// What is there (a quoted token, or "the end of the query").
        found: String,
    },
    /// A construct of other SQL dialects that the IoT Hub query language does not have.
    #[error("{construct} is not supported by the IoT Hub query language.{}", hint_text(.hint))]
    Unsupported {
        /// The construct, as the user would recognise it ("ORDER BY", "JOIN").
        construct: String,
        /// What to do instead, when there is something.
        hint: Option<String>,
    },
    /// A function the language does not have (or not in conditions).
    #[error(
        "The function '{name}' is not supported. Supported in conditions: IS_DEFINED, IS_NULL, IS_BOOL, IS_NUMBER, IS_STRING, IS_OBJECT, IS_ARRAY, IS_PRIMITIVE, STARTSWITH (STARTS_WITH), ENDSWITH (ENDS_WITH), CONTAINS; in the select list: COUNT, AVG, SUM, MIN, MAX."
    )]
    UnsupportedFunction {
        /// The name as written.
        name: String,
    },
    /// A function called with the wrong number of arguments.
    #[error("{function} takes {expected} argument(s) but was given {found}.")]
    WrongArgumentCount {
        /// The function's name.
        function: String,
        /// How many it takes.
        expected: usize,
        /// How many were given.
        found: usize,
    },
    /// An aggregate function outside the select list.
    #[error("The aggregate function {0} can only be used in the select list.")]
    AggregateOutsideSelect(String),
    /// `FROM` names no known collection.
    #[error("Unknown collection '{0}'; a query reads devices, devices.modules or devices.jobs.")]
    UnknownCollection(String),
    /// A path names another collection than the query reads (there are no joins).
    #[error(
        "The path '{path}' refers to another collection than {collection}; joins between collections are not supported."
    )]
    OtherCollection {
        /// The path as written.
        path: String,
        /// The collection the query reads.
        collection: String,
    },
    /// A collection prefix with no property after it (`devices.modules.`).
    #[error("The path '{0}' names a collection, not a property.")]
    CollectionAsPath(String),
    /// A select-list item that is neither a path nor an aggregate.
    #[error(
        "Only property paths and the aggregates COUNT(), AVG, SUM, MIN and MAX can be selected."
    )]
    BadSelectItem,
    /// A path selected next to aggregates without being grouped by.
    #[error("'{0}' is selected next to an aggregate but is not in GROUP BY.")]
    NotGrouped(String),
    /// `SELECT *` with `GROUP BY`.
    #[error("SELECT * cannot be used with GROUP BY; select the grouped paths and aggregates.")]
    StarWithGroupBy,
    /// Two select items give result rows the same member name.
    #[error(
        "The select list produces the name '{0}' twice; give the items different aliases with AS."
    )]
    DuplicateName(String),
    /// `IN`/`NIN` not followed by a bracketed list, or a non-constant inside a list.
    #[error("{0}")]
    BadList(String),
    /// Comparisons chained without `AND` (`a = b = c`).
    #[error("Comparisons cannot be chained; combine them with AND.")]
    ChainedComparison,
    /// Expressions nested deeper than the parser allows.
    #[error("The query is nested too deeply (more than {0} levels).")]
    TooDeep(usize),
}

fn hint_text(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!(" {h}"),
        None => String::new(),
    }
}

impl ParseErrorKind {
    pub(crate) fn unsupported(construct: &str, hint: Option<&str>) -> ParseErrorKind {
        ParseErrorKind::Unsupported {
            construct: construct.to_owned(),
            hint: hint.map(str::to_owned),
        }
    }
}

/// Why a continuation token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContinuationError {
    /// The token is not one this hub hands out (not base64, not the expected JSON, a field
    /// missing or of the wrong type).
    #[error("The continuation token is malformed.")]
    Malformed,
    /// The token was handed out for a different query text.
    #[error("The continuation token belongs to a different query; repeat the same query with it.")]
    OtherQuery,
}
