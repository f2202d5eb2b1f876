//! Refusals: every unsupported construct and syntax error is a typed error whose message
//! names it and says where it is.

use ferrohub_query::{Condition, Location, MAX_DEPTH, MAX_QUERY_CHARS, ParseErrorKind, Query};

/// Parses `text`, which must fail; returns the error's kind, location and message.
fn refuse(text: &str) -> (ParseErrorKind, Option<Location>, String) {
    match Query::parse(text) {
        Ok(q) => panic!("{text} parsed as {q}"),
        Err(e) => (e.kind.clone(), e.location, e.to_string()),
    }
}

fn at(line: usize, column: usize) -> Option<Location> {
    Some(Location { line, column })
}

#[test]
fn foreign_clauses_are_named() {
    let cases = [
        ("SELECT * FROM devices ORDER BY deviceId", "ORDER BY", 23),
        (
            "SELECT * FROM devices d JOIN devices.modules m",
            "A collection alias",
            23,
        ),
        ("SELECT * FROM devices JOIN devices.modules", "JOIN", 23),
        ("SELECT DISTINCT tags.a FROM devices", "SELECT DISTINCT", 8),
        ("SELECT VALUE tags.a FROM devices", "SELECT VALUE", 8),
        ("SELECT * FROM devices WHERE deviceId LIKE 'a%'", "LIKE", 38),
        (
            "SELECT * FROM devices WHERE deviceId NOT LIKE 'a%'",
            "LIKE",
            38,
        ),
        (
            "SELECT * FROM devices WHERE version BETWEEN 1 AND 2",
            "BETWEEN",
            37,
        ),
        (
            "SELECT * FROM devices WHERE tags.a IS NULL",
            "IS NULL / IS NOT NULL",
            36,
        ),
        (
            "SELECT * FROM devices WHERE deviceId = @id",
            "A query parameter (@name)",
            40,
        ),
        (
            "SELECT * FROM devices WHERE deviceId IN (SELECT deviceId FROM devices)",
            "IN and NIN",
            0,
        ),
        (
            "SELECT * FROM devices WHERE EXISTS(SELECT * FROM devices)",
            "EXISTS",
            29,
        ),
        ("SELECT * FROM devices LIMIT 5", "LIMIT", 23),
        (
            "SELECT * FROM devices WHERE deviceId = 'a' || 'b'",
            "String concatenation (||)",
            44,
        ),
        ("DELETE FROM devices", "DELETE", 1),
    ];
    for (text, construct, column) in cases {
        let (kind, location, message) = refuse(text);
        assert!(message.contains(construct), "{text}: {message}");
        if column > 0 {
            assert_eq!(location, at(1, column), "{text}: {message}");
        }
        if let ParseErrorKind::Unsupported { construct: c, .. } = &kind {
            assert_eq!(c, construct, "{text}");
            assert!(message.contains("not supported"), "{message}");
        }
    }
}

#[test]
fn having_after_a_valid_group_by_is_named() {
    let (kind, location, _) =
        refuse("SELECT status, COUNT() FROM devices GROUP BY status HAVING COUNT() > 1");
    assert!(
        matches!(kind, ParseErrorKind::Unsupported { ref construct, .. } if construct == "HAVING")
    );
    assert_eq!(location, at(1, 53));
}

#[test]
fn unknown_functions_list_the_supported_ones() {
    for name in ["LOWER", "upper", "ARRAY_CONTAINS", "LENGTH", "ST_DISTANCE"] {
        let (kind, location, message) = refuse(&format!(
            "SELECT * FROM devices WHERE {name}(deviceId) = 'x'"
        ));
        assert_eq!(
            kind,
            ParseErrorKind::UnsupportedFunction {
                name: name.to_owned()
            }
        );
        assert_eq!(location, at(1, 29));
        assert!(
            message.contains(&format!("'{name}' is not supported")),
            "{message}"
        );
        assert!(
            message.contains("IS_DEFINED") && message.contains("STARTSWITH"),
            "{message}"
        );
    }
}

#[test]
fn aggregates_only_in_the_select_list() {
    let (kind, location, _) = refuse("SELECT * FROM devices WHERE COUNT() > 1");
    assert_eq!(
        kind,
        ParseErrorKind::AggregateOutsideSelect("COUNT".to_owned())
    );
    assert_eq!(location, at(1, 29));
    let (kind, ..) = refuse("SELECT COUNT(deviceId) FROM devices");
    assert!(matches!(kind, ParseErrorKind::WrongArgumentCount { .. }));
    let (kind, ..) = refuse("SELECT LOWER(deviceId) FROM devices");
    assert_eq!(
        kind,
        ParseErrorKind::UnsupportedFunction {
            name: "LOWER".to_owned()
        }
    );
    let (kind, ..) = refuse("SELECT IS_DEFINED(deviceId) FROM devices");
    assert_eq!(kind, ParseErrorKind::BadSelectItem);
    let (kind, ..) = refuse("SELECT 'x' FROM devices");
    assert_eq!(kind, ParseErrorKind::BadSelectItem);
}

#[test]
fn grouping_rules() {
    let (kind, location, message) = refuse("SELECT deviceId, COUNT() FROM devices");
    assert_eq!(kind, ParseErrorKind::NotGrouped("deviceId".to_owned()));
    assert_eq!(location, at(1, 8));
    assert!(message.contains("not in GROUP BY"), "{message}");
    let (kind, ..) = refuse("SELECT status, COUNT() FROM devices GROUP BY tags.x");
    assert_eq!(kind, ParseErrorKind::NotGrouped("status".to_owned()));
    let (kind, ..) = refuse("SELECT * FROM devices GROUP BY status");
    assert_eq!(kind, ParseErrorKind::StarWithGroupBy);
    let (kind, location, _) = refuse("SELECT tags.a, properties.reported.a FROM devices");
    assert_eq!(kind, ParseErrorKind::DuplicateName("a".to_owned()));
    assert_eq!(location, at(1, 16));
    let (kind, ..) = refuse("SELECT COUNT(), COUNT() AS $1 FROM devices");
    assert_eq!(kind, ParseErrorKind::DuplicateName("$1".to_owned()));
}

#[test]
fn collections_and_joins() {
    let (kind, location, _) = refuse("SELECT * FROM twins");
    assert_eq!(kind, ParseErrorKind::UnknownCollection("twins".to_owned()));
    assert_eq!(location, at(1, 15));
    let (kind, ..) = refuse("SELECT * FROM devices.configurations");
    assert_eq!(
        kind,
        ParseErrorKind::UnknownCollection("devices.configurations".to_owned())
    );
    let (kind, location, message) =
        refuse("SELECT * FROM devices WHERE devices.modules.moduleId = 'm'");
    assert_eq!(
        kind,
        ParseErrorKind::OtherCollection {
            path: "devices.modules.moduleId".to_owned(),
            collection: "devices".to_owned()
        }
    );
    assert_eq!(location, at(1, 29));
    assert!(
        message.contains("joins between collections are not supported"),
        "{message}"
    );
    let (kind, ..) = refuse("SELECT * FROM devices.jobs WHERE devices.tags.a = 1");
    assert!(matches!(kind, ParseErrorKind::OtherCollection { .. }));
    let (kind, ..) = refuse("SELECT * FROM devices.modules WHERE devices.jobs.jobId = 'j'");
    assert!(matches!(kind, ParseErrorKind::OtherCollection { .. }));
    let (kind, ..) = refuse("SELECT * FROM devices.modules WHERE devices.modules = 1");
    assert_eq!(
        kind,
        ParseErrorKind::CollectionAsPath("devices.modules".to_owned())
    );
}

#[test]
fn syntax_errors_say_what_was_expected() {
    let (kind, location, message) = refuse("SELECT * FROM devices WHERE");
    assert!(matches!(kind, ParseErrorKind::Expected { .. }));
    assert_eq!(location, at(1, 28));
    assert!(
        message.contains("Expected an expression but found the end of the query"),
        "{message}"
    );
    let (_, location, message) = refuse("SELECT *\nFROM devices\nWHERE tags.a = = 1");
    assert_eq!(location, at(3, 16));
    assert!(message.contains("line 3, column 16"), "{message}");
    let (kind, ..) = refuse("SELECT * devices");
    assert!(matches!(kind, ParseErrorKind::Expected { .. }));
    let (kind, ..) = refuse("SELECT TOP x * FROM devices");
    assert!(
        matches!(kind, ParseErrorKind::Expected { ref expected, .. } if expected.contains("TOP"))
    );
    let (kind, ..) = refuse("SELECT TOP 1.5 * FROM devices");
    assert!(matches!(kind, ParseErrorKind::Expected { .. }));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE tags.a = 1 = 1");
    assert_eq!(kind, ParseErrorKind::ChainedComparison);
    let (kind, ..) = refuse("SELECT * FROM devices WHERE tags.a IN 'x'");
    assert!(matches!(kind, ParseErrorKind::BadList(_)));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE tags.a IN [tags.b]");
    assert!(matches!(kind, ParseErrorKind::BadList(_)));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE STARTSWITH(deviceId)");
    assert_eq!(
        kind,
        ParseErrorKind::WrongArgumentCount {
            function: "STARTSWITH".to_owned(),
            expected: 2,
            found: 1
        }
    );
    let (kind, ..) = refuse("SELECT * FROM devices WHERE (deviceId = 'a'");
    assert!(matches!(kind, ParseErrorKind::Expected { ref expected, .. } if expected == "')'"));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE tags. = 1");
    assert!(matches!(kind, ParseErrorKind::Expected { .. }));
    let (kind, location, _) = refuse("SELECT deviceId AS FROM devices");
    assert!(
        matches!(kind, ParseErrorKind::Expected { ref expected, .. } if expected == "a name after AS"),
        "{kind:?}"
    );
    assert_eq!(location, at(1, 20));
    let (kind, location, _) = refuse("SELECT deviceId AS");
    assert!(
        matches!(kind, ParseErrorKind::Expected { ref found, .. } if found == "the end of the query"),
        "{kind:?}"
    );
    assert_eq!(location, at(1, 19));
    let (_, location, _) = refuse("SELECT * FROM devices WHERE tags.");
    assert_eq!(location, at(1, 34));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE tags[1.5] = 1");
    assert!(matches!(kind, ParseErrorKind::Expected { .. }));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE tags[-1] = 1");
    assert!(matches!(kind, ParseErrorKind::Expected { .. }));
    let (kind, ..) = refuse("SELECT * FROM devices;");
    assert_eq!(kind, ParseErrorKind::UnexpectedCharacter(';'));
}

#[test]
fn lexical_errors() {
    let (kind, location, _) = refuse("SELECT * FROM devices WHERE deviceId = 'abc");
    assert_eq!(kind, ParseErrorKind::UnterminatedString);
    assert_eq!(location, at(1, 40));
    let (kind, ..) = refuse(r"SELECT * FROM devices WHERE deviceId = 'a\qb'");
    assert_eq!(kind, ParseErrorKind::InvalidEscape("\\q".to_owned()));
    let (kind, ..) = refuse(r"SELECT * FROM devices WHERE deviceId = '\ud800'");
    assert!(matches!(kind, ParseErrorKind::InvalidEscape(_)));
    let (kind, ..) = refuse(r"SELECT * FROM devices WHERE deviceId = '\u12'");
    assert!(matches!(kind, ParseErrorKind::InvalidEscape(_)));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE version = 12abc");
    assert_eq!(kind, ParseErrorKind::InvalidNumber("12abc".to_owned()));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE version = 0x");
    assert_eq!(kind, ParseErrorKind::InvalidNumber("0x".to_owned()));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE version = 0x1FFFFFFFFFFFFFFFF");
    assert!(matches!(kind, ParseErrorKind::InvalidNumber(_)));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE version = 1e999");
    assert!(matches!(kind, ParseErrorKind::InvalidNumber(_)));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE version = 1e");
    assert!(matches!(kind, ParseErrorKind::InvalidNumber(_)));
    let (kind, ..) = refuse("SELECT * FROM devices WHERE tags = {}");
    assert!(matches!(kind, ParseErrorKind::Unsupported { .. }));
}

#[test]
fn length_limit_counts_characters() {
    let base = "SELECT * FROM devices WHERE deviceId = '";
    let fill = MAX_QUERY_CHARS - base.chars().count() - 1;
    // Exactly at the limit, with multi-byte characters: accepted.
    let ok = format!("{base}{}'", "é".repeat(fill));
    assert!(Query::parse(&ok).is_ok());
    let long = format!("{base}{}'", "é".repeat(fill + 1));
    let (kind, location, message) = refuse(&long);
    assert_eq!(
        kind,
        ParseErrorKind::TooLong {
            length: MAX_QUERY_CHARS + 1,
            max: MAX_QUERY_CHARS
        }
    );
    assert_eq!(location, None);
    assert!(message.contains("at most 8192"), "{message}");
}

#[test]
fn nesting_is_bounded() {
    let deep = format!(
        "SELECT * FROM devices WHERE {}1 = 1{}",
        "(".repeat(500),
        ")".repeat(500)
    );
    assert_eq!(refuse(&deep).0, ParseErrorKind::TooDeep(MAX_DEPTH));
    let nots = format!("SELECT * FROM devices WHERE {}true", "NOT ".repeat(500));
    assert_eq!(refuse(&nots).0, ParseErrorKind::TooDeep(MAX_DEPTH));
    let chain = format!(
        "SELECT * FROM devices WHERE a = 1{}",
        " AND a = 1".repeat(500)
    );
    assert_eq!(refuse(&chain).0, ParseErrorKind::TooDeep(MAX_DEPTH));
    let arrays = format!(
        "SELECT * FROM devices WHERE a IN {}{}",
        "[".repeat(500),
        "]".repeat(500)
    );
    assert_eq!(refuse(&arrays).0, ParseErrorKind::TooDeep(MAX_DEPTH));
    let minus = format!("SELECT * FROM devices WHERE {}a = 1", "-".repeat(500));
    assert_eq!(refuse(&minus).0, ParseErrorKind::TooDeep(MAX_DEPTH));
    // Moderate nesting is fine.
    let fine = format!(
        "SELECT * FROM devices WHERE {}1 = 1{}",
        "(".repeat(20),
        ")".repeat(20)
    );
    assert!(Query::parse(&fine).is_ok());
}

#[test]
fn empty_text_and_conditions() {
    assert_eq!(refuse("").0, ParseErrorKind::Empty);
    assert_eq!(refuse("   \n").0, ParseErrorKind::Empty);
    assert_eq!(
        Condition::parse("").map_err(|e| e.kind),
        Err(ParseErrorKind::Empty)
    );
    let e = Condition::parse("deviceId = 'a' ORDER BY deviceId").expect_err("ORDER BY");
    assert!(e.to_string().contains("ORDER BY is not supported"), "{e}");
    let e = Condition::parse("* AND deviceId = 'a'").expect_err("star is alone");
    assert!(matches!(e.kind, ParseErrorKind::Expected { .. }));
    let e =
        Condition::parse("devices.modules.moduleId = 'a'").expect_err("conditions read devices");
    assert!(matches!(e.kind, ParseErrorKind::OtherCollection { .. }));
}
