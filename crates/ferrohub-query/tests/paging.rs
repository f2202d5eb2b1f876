//! Paging and continuation tokens: key order, look-ahead, TOP over pages, and validation of
//! tokens read back.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{devices, key_of, modules, pages};
use ferrohub_query::{
    Collection, Continuation, ContinuationError, DEFAULT_PAGE_SIZE, Flow, MAX_PAGE_SIZE, Query,
    RowKey,
};
use serde_json::{Value, json};

fn token(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn modules_page_by_device_then_module() {
    let q = Query::parse("SELECT deviceId, moduleId FROM devices.modules").expect("parses");
    let ps = pages(&q, &modules(), 2);
    let rows: Vec<Value> = ps.iter().flat_map(|p| p.rows.clone()).collect();
    assert_eq!(
        rows,
        [
            json!({"deviceId": "d1", "moduleId": "$edgeAgent"}),
            json!({"deviceId": "d1", "moduleId": "scanner"}),
            json!({"deviceId": "device1", "moduleId": "scanner"}),
            json!({"deviceId": "device2", "moduleId": "scanner"}),
            json!({"deviceId": "device3", "moduleId": "scanner"}),
        ]
    );
    assert_eq!(ps.len(), 3);
    let second =
        Continuation::decode(ps[0].continuation.as_deref().expect("more"), &q).expect("valid");
    assert_eq!(
        second.resume_after(),
        Some(&RowKey::module("d1", "scanner"))
    );
    assert_eq!(second.returned(), 2);
}

#[test]
fn a_page_resumes_after_its_key_even_when_rows_change() {
    let q = Query::parse("SELECT * FROM devices").expect("parses");
    let mut pager = q.pager(1, None).expect("first page");
    let rows = devices();
    assert_eq!(
        pager.push(key_of(Collection::Devices, &rows[0]), rows[0].clone()),
        Flow::Continue
    );
    assert_eq!(
        pager.push(key_of(Collection::Devices, &rows[1]), rows[1].clone()),
        Flow::Stop
    );
    let page = pager.finish();
    assert_eq!(page.rows, [rows[0].clone()]);
    let token = page.continuation.expect("more");
    // The next page starts after AZ3166Device whether or not d1 still exists; a store that
    // hands back rows at or before the key has them skipped.
    let mut pager = q.pager(1, Some(&token)).expect("second page");
    assert_eq!(pager.resume_after(), Some(&RowKey::device("AZ3166Device")));
    assert_eq!(
        pager.push(key_of(Collection::Devices, &rows[0]), rows[0].clone()),
        Flow::Continue
    );
    assert_eq!(
        pager.push(key_of(Collection::Devices, &rows[2]), rows[2].clone()),
        Flow::Continue
    );
    let page = pager.finish();
    assert_eq!(page.rows, [rows[2].clone()]);
    assert!(page.continuation.is_none(), "no more rows were pushed");
}

#[test]
fn top_reached_on_an_earlier_page_needs_no_read() {
    let q = Query::parse("SELECT TOP 2 deviceId FROM devices").expect("parses");
    let tok = |returned: u64| {
        token(
            &json!({"v": 1, "q": format!("{:016x}", q.fingerprint()), "n": returned, "k": ["d1"]}),
        )
    };
    let pager = q.pager(10, Some(&tok(2))).expect("valid");
    assert!(!pager.wants_rows());
    let page = pager.finish();
    assert!(page.rows.is_empty() && page.continuation.is_none());
    let mut pager = q.pager(10, Some(&tok(1))).expect("valid");
    assert!(pager.wants_rows());
    assert_eq!(
        pager.push(RowKey::device("d2"), json!({"deviceId": "d2"})),
        Flow::Stop
    );
    assert_eq!(pager.finish().rows, [json!({"deviceId": "d2"})]);
}

#[test]
fn page_sizes_are_clamped() {
    let q = Query::parse("SELECT deviceId FROM devices").expect("parses");
    let many: Vec<Value> = (0..1500)
        .map(|i| json!({"deviceId": format!("d{i:04}")}))
        .collect();
    let ps = pages(&q, &many[..3], 0);
    assert_eq!(
        ps.iter().map(|p| p.rows.len()).collect::<Vec<_>>(),
        [1, 1, 1]
    );
    let ps = pages(&q, &many, 5000);
    assert_eq!(ps[0].rows.len(), MAX_PAGE_SIZE);
    assert_eq!(ps.len(), 2);
    let ps = pages(&q, &many, DEFAULT_PAGE_SIZE);
    assert_eq!(ps.len(), 15);
    assert_eq!(ps.iter().map(|p| p.rows.len()).sum::<usize>(), 1500);
}

#[test]
fn malformed_tokens_are_refused() {
    let q = Query::parse("SELECT * FROM devices").expect("parses");
    let fp = format!("{:016x}", q.fingerprint());
    let bad = [
        String::new(),
        "not base64!".to_owned(),
        URL_SAFE_NO_PAD.encode("not json"),
        token(&json!([1, 2])),
        token(&json!({"v": 2, "q": fp, "n": 0, "k": ["d"]})),
        token(&json!({"v": 1, "q": "zz", "n": 0, "k": ["d"]})),
        token(&json!({"v": 1, "q": fp, "n": -1, "k": ["d"]})),
        token(&json!({"v": 1, "q": fp, "k": ["d"]})),
        token(&json!({"v": 1, "q": fp, "n": 0})),
        token(&json!({"v": 1, "q": fp, "n": 0, "k": [1]})),
        token(&json!({"v": 1, "q": fp, "n": 0, "k": "d"})),
        token(&json!({"v": 1, "q": fp, "n": 0, "k": ["d"], "o": 1})),
        token(&json!({"v": 1, "q": fp, "n": 0, "k": ["d"], "extra": true})),
        "A".repeat(10_000),
    ];
    for t in bad {
        assert_eq!(
            q.pager(10, Some(&t)).map(|_| ()),
            Err(ContinuationError::Malformed),
            "{t}"
        );
    }
    // The message is what the hub answers with.
    assert_eq!(
        ContinuationError::Malformed.to_string(),
        "The continuation token is malformed."
    );
}

#[test]
fn tokens_belong_to_their_query() {
    let a = Query::parse("SELECT * FROM devices WHERE tags.a = 1").expect("parses");
    let b = Query::parse("SELECT * FROM devices WHERE tags.a = 2").expect("parses");
    let mut pager = a.pager(1, None).expect("first");
    pager.push(RowKey::device("x"), json!({"tags": {"a": 1}}));
    pager.push(RowKey::device("y"), json!({"tags": {"a": 1}}));
    let t = pager.finish().continuation.expect("more");
    assert!(a.pager(1, Some(&t)).is_ok());
    assert_eq!(
        b.pager(1, Some(&t)).map(|_| ()),
        Err(ContinuationError::OtherQuery)
    );
    // The same query written differently is the same query.
    let a2 = Query::parse("select *  from DEVICES where Tags.a = 1").expect("parses");
    assert!(a2.pager(1, Some(&t)).is_ok());
    // A module key does not fit a devices query.
    let fp = format!("{:016x}", a.fingerprint());
    let module_key = token(&json!({"v": 1, "q": fp, "n": 0, "k": ["d", "m"]}));
    assert_eq!(
        a.pager(1, Some(&module_key)).map(|_| ()),
        Err(ContinuationError::OtherQuery)
    );
    // An offset token does not fit a row query.
    let offset = token(&json!({"v": 1, "q": fp, "n": 0, "o": 3}));
    assert_eq!(
        a.pager(1, Some(&offset)).map(|_| ()),
        Err(ContinuationError::OtherQuery)
    );
}

#[test]
fn aggregate_tokens_count_result_rows() {
    let q =
        Query::parse("SELECT status, COUNT() AS n FROM devices GROUP BY status").expect("parses");
    let rows: Vec<Value> = (0..5)
        .map(|i| json!({"deviceId": format!("d{i}"), "status": format!("s{}", i % 3)}))
        .collect();
    let ps = pages(&q, &rows, 2);
    assert_eq!(ps.len(), 2);
    assert_eq!(
        ps[0].rows,
        [
            json!({"status": "s0", "n": 2}),
            json!({"status": "s1", "n": 2})
        ]
    );
    assert_eq!(ps[1].rows, [json!({"status": "s2", "n": 1})]);
    let t = Continuation::decode(ps[0].continuation.as_deref().expect("more"), &q).expect("valid");
    assert_eq!(t.resume_after(), None, "aggregates read everything again");
    assert_eq!(t.returned(), 2);
    // TOP applies to the groups.
    let q = Query::parse("SELECT TOP 1 status, COUNT() AS n FROM devices GROUP BY status")
        .expect("parses");
    let ps = pages(&q, &rows, 2);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].rows, [json!({"status": "s0", "n": 2})]);
}

#[test]
fn tokens_are_opaque_header_safe_text() {
    let q = Query::parse("SELECT * FROM devices.modules").expect("parses");
    let mut pager = q.pager(1, None).expect("first");
    pager.push(RowKey::module("dév/1", "m+o=d"), json!({}));
    pager.push(RowKey::module("dév/2", "m"), json!({}));
    let t = pager.finish().continuation.expect("more");
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{t}"
    );
    let back = Continuation::decode(&t, &q).expect("valid");
    assert_eq!(back.resume_after(), Some(&RowKey::module("dév/1", "m+o=d")));
    assert_eq!(Continuation::decode(&back.encode(), &q), Ok(back));
}
