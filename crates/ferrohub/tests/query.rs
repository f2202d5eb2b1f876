//! End-to-end tests of `ferrohub query` against a real hub: every page read, table and JSON.

use ferrohub_test_support::TestHub;
use serde_json::{Value, json};

mod common;
use common::*;

#[tokio::test]
async fn query_reads_every_page_as_table_or_json() {
    let hub = TestHub::start().await;
    for (id, room) in [
        ("c1", "kitchen"),
        ("c2", "hall"),
        ("c3", "kitchen"),
        ("c4", "kitchen"),
    ] {
        ok(&run(&hub, &["device", "create", id]).await);
        ok(&run(
            &hub,
            &[
                "twin",
                "update",
                id,
                "--tags",
                &json!({ "room": room }).to_string(),
            ],
        )
        .await);
    }

    // Pages of one row: the CLI follows the continuation to the end.
    let rows = ok_json(
        &run(
            &hub,
            &[
                "query",
                "SELECT * FROM devices WHERE tags.room = 'kitchen'",
                "--page-size",
                "1",
                "--output",
                "json",
            ],
        )
        .await,
    );
    let ids: Vec<&str> = rows
        .as_array()
        .expect("an array")
        .iter()
        .map(|t| t["deviceId"].as_str().expect("deviceId"))
        .collect();
    assert_eq!(ids, ["c1", "c3", "c4"]);
    assert_eq!(rows[0]["tags"], json!({"room": "kitchen"}));

    let table = ok(&run(
        &hub,
        &[
            "query",
            "SELECT deviceId, tags.room FROM devices WHERE deviceId IN ['c2', 'c4']",
        ],
    )
    .await);
    assert_eq!(table, "deviceId  room\nc2        hall\nc4        kitchen\n");

    let groups = ok_json(
        &run(
            &hub,
            &[
                "query",
                "SELECT COUNT() AS n, tags.room AS room FROM devices GROUP BY tags.room",
                "--output",
                "json",
            ],
        )
        .await,
    );
    let mut groups: Vec<(String, u64)> = groups
        .as_array()
        .expect("an array")
        .iter()
        .map(|g: &Value| {
            (
                g["room"].as_str().expect("room").to_owned(),
                g["n"].as_u64().expect("n"),
            )
        })
        .collect();
    groups.sort();
    assert_eq!(groups, [("hall".to_owned(), 1), ("kitchen".to_owned(), 3)]);

    let top = ok_json(
        &run(
            &hub,
            &[
                "query",
                "SELECT deviceId FROM devices",
                "--page-size",
                "1",
                "--top",
                "2",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(top, json!([{"deviceId": "c1"}, {"deviceId": "c2"}]));

    // An unsupported query: exit status 1 and Azure's message.
    let out = run(&hub, &["query", "SELECT * FROM devices ORDER BY deviceId"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("ORDER BY"), "{}", stderr(&out));
}
