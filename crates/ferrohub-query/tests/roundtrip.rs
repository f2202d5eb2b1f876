//! Printing a tree and parsing the text gives the same tree; parsing anything never panics.

mod common;

use common::arb;
use ferrohub_query::{Condition, Query};
use proptest::prelude::*;

/// Pieces of query text, for token soups that parse now and then.
const WORDS: &[&str] = &[
    "SELECT",
    "TOP",
    "3",
    "*",
    "FROM",
    "devices",
    "devices.modules",
    "devices.jobs",
    "WHERE",
    "GROUP",
    "BY",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "=",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "/",
    "%",
    "'x'",
    "\"y\"",
    "1.5",
    "0x1F",
    "-2",
    "true",
    "null",
    "undefined",
    "tags",
    "a",
    "id",
    "DeviceId",
    "properties",
    "reported",
    "devices.x",
    "COUNT()",
    "SUM",
    "IS_DEFINED",
    "STARTSWITH",
    "['k']",
    "[0]",
    "n",
];

fn soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(WORDS), 0..24).prop_map(|w| w.join(" "))
}

fn select_soup() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(
            &[
                "*",
                "deviceId",
                "COUNT() AS n",
                "tags.a, tags.b AS c",
                "SUM(tags.a)",
            ][..],
        ),
        proptest::sample::select(&["devices", "devices.modules", "devices.jobs"][..]),
        soup(),
    )
        .prop_map(|(s, c, w)| format!("SELECT {s} FROM {c} WHERE {w}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn printed_queries_parse_back(q in arb::query()) {
        let text = q.to_string();
        let back = Query::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(back, q, "{}", text);
    }

    #[test]
    fn printed_conditions_parse_back(e in arb::expr()) {
        let c = Condition::Where(e);
        let text = c.to_string();
        let back = Condition::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(back, c, "{}", text);
    }

    #[test]
    fn parsed_text_prints_to_a_fixed_point(text in prop_oneof![select_soup(), soup(), any::<String>()]) {
        if let Ok(q) = Query::parse(&text) {
            let printed = q.to_string();
            let back = Query::parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
            prop_assert_eq!(&back, &q, "{} printed as {}", text, printed);
            prop_assert_eq!(back.to_string(), printed);
        }
        if let Ok(c) = Condition::parse(&text) {
            let printed = c.to_string();
            let back = Condition::parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
            prop_assert_eq!(back, c);
        }
    }
}

#[test]
fn canonical_text() {
    let q = Query::parse(
        "select top 5 DeviceId as d, Tags.x from DEVICES.MODULES where not (a.b = -1.5 or x in [1, 'it''s'] ) and -(version) + 2 * 3 > 0x10 group by deviceid, tags.x",
    );
    // SQL's doubled quote is not an escape here: the string ends, and 's' follows.
    assert!(q.is_err());
    let q = Query::parse(
        r"select top 5 DeviceId as d, Tags.x from DEVICES.MODULES where not (a.b = -1.5 or x nin [1, 'it\'s', null] ) and -(version) + 2 * 3 > 0x10 group by deviceid, tags.x",
    )
    .expect("parses");
    assert_eq!(
        q.to_string(),
        r"SELECT TOP 5 deviceId AS d, tags.x FROM devices.modules WHERE NOT (a.b = -1.5 OR x NIN [1, 'it\'s', null]) AND -version + 2 * 3 > 16 GROUP BY deviceId, tags.x"
    );
    let q = Query::parse(
        "SELECT * FROM devices WHERE devices.devices.x = 1 AND devices.not = devices['my key'][0]",
    )
    .expect("parses");
    assert_eq!(
        q.to_string(),
        "SELECT * FROM devices WHERE devices.devices.x = 1 AND devices.not = devices['my key'][0]"
    );
    assert_eq!(Condition::parse(" * ").expect("parses").to_string(), "*");
    let q = Query::parse(
        "SELECT * FROM devices WHERE -(5) < - -5 AND --a = -(a + 1) AND -IS_NULL(a) = -[1]",
    )
    .expect("parses");
    assert_eq!(
        q.to_string(),
        "SELECT * FROM devices WHERE -(5) < - -5 AND - -a = -(a + 1) AND -IS_NULL(a) = -[1]"
    );
}

#[test]
fn printing_never_nests_deeper_than_the_text_it_came_from() {
    // Found by fuzzing: unary minus chains near the nesting limit.
    for n in [50, 98, 99] {
        let text = format!("J{}O", "-".repeat(n));
        let q = Condition::parse(&text).expect("within the limit");
        assert_eq!(Condition::parse(&q.to_string()), Ok(q), "{text}");
    }
    let text = format!(
        "SELECT * FROM devices WHERE {}a{}",
        "NOT (".repeat(49),
        ")".repeat(49)
    );
    let q = Query::parse(&text).expect("within the limit");
    assert_eq!(Query::parse(&q.to_string()), Ok(q));
}
