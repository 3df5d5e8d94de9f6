//! Real events captured from public Jetstream hosts (`../shared/jetstream`, beside the
//! repository): every line decodes, lands in its collection's table, and some field values are
//! checked one by one after the Arrow conversion.

use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow_array::RecordBatch;
use firehose_core::record::nsid;
use firehose_core::{Event, Payload, Table, record_batches};

use crate::common::{bool_at, i32_at, i64_at, list_at, one_row, str_at, strings};

fn capture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/jetstream/v1-capture-sample.jsonl")
}

/// The table a captured event must land in: its collection's (every real record of a known
/// collection fits its typed shape), identity or account.
fn expected_table(event: &Event<'_>) -> Table {
    match &event.payload {
        Payload::Commit(c) => match c.collection.as_ref() {
            nsid::LIKE => Table::Likes,
            nsid::POST => Table::Posts,
            nsid::REPOST => Table::Reposts,
            nsid::FOLLOW => Table::Follows,
            nsid::BLOCK => Table::Blocks,
            nsid::LISTITEM => Table::ListItems,
            nsid::PROFILE => Table::Profiles,
            _ => Table::Records,
        },
        Payload::Identity(_) => Table::Identity,
        Payload::Account(_) => Table::Account,
    }
}

#[test]
fn jetstream_capture() {
    let path = capture_path();
    let Ok(data) = std::fs::read(&path) else {
        eprintln!(
            "jetstream_capture NOT RUN: {} does not exist (it is outside the repository)",
            path.display()
        );
        return;
    };
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert!(lines.len() >= 100, "capture has {} lines", lines.len());

    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let event = Event::decode(line)
            .unwrap_or_else(|e| panic!("capture line {} does not decode: {e}", i + 1));
        assert_eq!(
            event.table(),
            expected_table(&event),
            "capture line {}",
            i + 1
        );
        let json = event.to_json();
        let again = Event::decode(json.as_bytes()).expect("re-encoded line decodes");
        assert_eq!(again, event, "capture line {} round trip", i + 1);
        events.push(event);
    }

    // The whole capture in one conversion keeps every row, in its table, in order.
    let batches = record_batches(&events).expect("arrow conversion");
    let mut expected: BTreeMap<Table, Vec<&Event<'_>>> = BTreeMap::new();
    for e in &events {
        expected.entry(e.table()).or_default().push(e);
    }
    assert_eq!(batches.len(), expected.len());
    for (table, batch) in &batches {
        let rows = &expected[table];
        assert_eq!(batch.num_rows(), rows.len(), "{table}");
        for (r, e) in rows.iter().enumerate() {
            assert_eq!(str_at(batch, "did", r).as_deref(), Some(&*e.did));
            assert_eq!(i64_at(batch, "time_us", r), Some(e.time_us));
        }
    }
    for t in [
        Table::Posts,
        Table::Likes,
        Table::Reposts,
        Table::Follows,
        Table::Blocks,
        Table::Profiles,
        Table::Records,
        Table::Identity,
        Table::Account,
    ] {
        assert!(expected.contains_key(&t), "the capture has no {t} event");
    }

    let at = |line: usize| -> RecordBatch { one_row(&events[line - 1]).1 };

    // Line 1: a like.
    let b = at(1);
    assert_eq!(
        str_at(&b, "did", 0).as_deref(),
        Some("did:plc:mcc5yghbk7tixqryac2yxku7")
    );
    assert_eq!(i64_at(&b, "time_us", 0), Some(1_779_719_009_132_431));
    assert_eq!(
        str_at(&b, "subject_uri", 0).as_deref(),
        Some("at://did:plc:vfnmgxg2yscfliemmcxzyfyh/app.bsky.feed.post/3mmoodizfwc2j")
    );
    assert_eq!(
        str_at(&b, "subject_cid", 0).as_deref(),
        Some("bafyreiaxf7tgbfydx3465sckitq6v564thxe2wwydbi7cwxbxvgssje3em")
    );
    assert_eq!(
        str_at(&b, "created_at", 0).as_deref(),
        Some("2026-05-25T14:23:28.778Z")
    );
    assert_eq!(
        str_at(&b, "cid", 0).as_deref(),
        Some("bafyreidqpc7si3dbimffi64lz3xsx2qt45ip7rpna2qpslcddp23itjjzm")
    );
    assert_eq!(str_at(&b, "rev", 0).as_deref(), Some("3mmoojp7vgo2g"));
    assert_eq!(str_at(&b, "via_uri", 0), None);

    // Line 2: a reply post.
    let b = at(2);
    assert_eq!(
        str_at(&b, "text", 0).as_deref(),
        Some("Try RSV for a good time !!")
    );
    assert_eq!(list_at(&b, "langs", 0), strings(&["en"]));
    assert_eq!(
        str_at(&b, "reply_parent_uri", 0).as_deref(),
        Some("at://did:plc:j76trmiofvaxxpvx2vnb2vwf/app.bsky.feed.post/3mmojbrjwbs26")
    );
    assert_eq!(
        str_at(&b, "reply_root_cid", 0).as_deref(),
        Some("bafyreiainko5un5pbcdosvxpbisjnjzemojnry6nsgtdftdgslbu37kxai")
    );
    assert_eq!(str_at(&b, "embed_kind", 0), None);
    assert_eq!(i32_at(&b, "embed_image_count", 0), None);

    // Line 12: a link card with a link facet; 56: hashtags; 154: one image.
    let b = at(12);
    assert_eq!(str_at(&b, "embed_kind", 0).as_deref(), Some("external"));
    assert_eq!(
        str_at(&b, "embed_external_uri", 0).as_deref(),
        Some("https://www.youtube.com/watch?v=V5lDo-jw8mA")
    );
    assert_eq!(
        list_at(&b, "links", 0),
        strings(&["https://www.youtube.com/watch?v=V5lDo-jw8mA"])
    );
    let b = at(56);
    assert_eq!(
        list_at(&b, "facet_tags", 0),
        strings(&["HowToTellAiToShutUp", "IndieRebellion"])
    );
    let b = at(154);
    assert_eq!(str_at(&b, "embed_kind", 0).as_deref(), Some("images"));
    assert_eq!(i32_at(&b, "embed_image_count", 0), Some(1));

    // Line 4: a follow.
    let b = at(4);
    assert_eq!(
        str_at(&b, "subject", 0).as_deref(),
        Some("did:plc:anc6s2kher6ltrhhglxrzxsa")
    );

    // Line 5: a profile update with blobs and a pinned post.
    let b = at(5);
    assert_eq!(str_at(&b, "operation", 0).as_deref(), Some("update"));
    assert_eq!(
        str_at(&b, "avatar_cid", 0).as_deref(),
        Some("bafkreieajxclqzwk2mczx7hxmoboqpuiveqlbm35gsda5xlaqfmlryu4ri")
    );
    assert_eq!(
        str_at(&b, "banner_cid", 0).as_deref(),
        Some("bafkreicd6csmqjikxnkuwxu4sjre6gqy6pcts7cwab7lg4kixca2k2nfd4")
    );
    assert_eq!(
        str_at(&b, "display_name", 0).as_deref(),
        Some("Multiversal Lokis Unit🔞")
    );
    assert_eq!(
        str_at(&b, "pinned_post_uri", 0).as_deref(),
        Some("at://did:plc:o6t5vwyr7ae73foww7bgye4r/app.bsky.feed.post/3meuab5it2s2g")
    );

    // Line 6: a delete of an unknown collection.
    let b = at(6);
    assert_eq!(
        str_at(&b, "collection", 0).as_deref(),
        Some("org.hypercerts.claim.activity")
    );
    assert_eq!(str_at(&b, "record_json", 0), None);
    assert_eq!(str_at(&b, "cid", 0), None);

    // Line 7: an update of place.stream.*, kept as JSON.
    let b = at(7);
    let json = str_at(&b, "record_json", 0).expect("record_json");
    assert!(json.starts_with(
        r#"{"$type":"place.stream.broadcast.origin","broadcaster":"did:web:stream.place""#
    ));
    assert!(String::from_utf8_lossy(lines[6]).contains(&json));

    // Line 8: identity without handle; line 165: with one.
    let b = at(8);
    assert_eq!(str_at(&b, "handle", 0), None);
    assert_eq!(i64_at(&b, "seq", 0), Some(30_340_180_350));
    let b = at(165);
    assert_eq!(
        str_at(&b, "handle", 0).as_deref(),
        Some("yohenrique.bsky.social")
    );
    assert_eq!(
        str_at(&b, "time", 0).as_deref(),
        Some("2024-09-05T06:11:04.870Z")
    );

    // Line 9: an active account; lines 170 and 171: deleted and deactivated ones.
    let b = at(9);
    assert_eq!(bool_at(&b, "active", 0), Some(true));
    assert_eq!(str_at(&b, "status", 0), None);
    let b = at(170);
    assert_eq!(bool_at(&b, "active", 0), Some(false));
    assert_eq!(str_at(&b, "status", 0).as_deref(), Some("deleted"));
    let b = at(171);
    assert_eq!(str_at(&b, "status", 0).as_deref(), Some("deactivated"));
    assert_eq!(i64_at(&b, "seq", 0), Some(3_040_939_563));

    // Line 10: a block.
    let b = at(10);
    assert_eq!(
        str_at(&b, "subject", 0).as_deref(),
        Some("did:plc:pgsrzsvisagr7wfqasmu3cgf")
    );
}
