//! Field values of the fixtures, one by one after the Arrow conversion, and inputs that are
//! generated rather than written down: very long texts and deep nesting.

use std::borrow::Cow;

use firehose_core::record::nsid;
use firehose_core::{Event, Payload, Post, Record, Table};

use crate::common::{bool_at, i32_at, i64_at, list_at, one_row, str_at, strings, valid};

/// Decodes the valid case `desc` and converts it, checking its table.
fn row(desc: &str, table: Table) -> arrow_array::RecordBatch {
    let case = valid(desc);
    let event = Event::decode(&case.input).expect("valid case decodes");
    let (t, batch) = one_row(&event);
    assert_eq!(t, table, "{desc}");
    batch
}

#[test]
fn likes_and_reposts() {
    let b = row("like create without via", Table::Likes);
    assert_eq!(
        str_at(&b, "subject_uri", 0).as_deref(),
        Some("at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3lbvrf3gpck2e")
    );
    assert_eq!(
        str_at(&b, "subject_cid", 0).as_deref(),
        Some("bafyreiba4ugsxsuhtvb2ih4ktm3uedrgm3yc2ls6wkdunnamqybubsb5yq")
    );
    assert_eq!(str_at(&b, "via_uri", 0), None);
    assert_eq!(str_at(&b, "via_cid", 0), None);
    assert_eq!(
        str_at(&b, "created_at", 0).as_deref(),
        Some("2024-11-19T07:06:40.000Z")
    );
    assert_eq!(str_at(&b, "rkey", 0).as_deref(), Some("3lbvsh6oi3k2f"));
    assert_eq!(str_at(&b, "rev", 0).as_deref(), Some("3lbvsh6oz2k2f"));

    let b = row("like create with via", Table::Likes);
    assert_eq!(
        str_at(&b, "via_uri", 0).as_deref(),
        Some("at://did:plc:via/app.bsky.feed.repost/3lbvia")
    );
    assert_eq!(str_at(&b, "via_cid", 0).as_deref(), Some("bafyreivia"));

    let b = row("repost create", Table::Reposts);
    assert_eq!(
        str_at(&b, "subject_cid", 0).as_deref(),
        Some("bafyreiba4ugsxsuhtvb2ih4ktm3uedrgm3yc2ls6wkdunnamqybubsb5yq")
    );
    assert_eq!(
        str_at(&b, "created_at", 0).as_deref(),
        Some("2024-11-19T07:06:42.000Z")
    );
}

#[test]
fn deletes_keep_the_envelope_with_null_record_columns() {
    for (desc, table) in [
        ("like delete", Table::Likes),
        ("repost delete", Table::Reposts),
        ("follow delete", Table::Follows),
        ("listitem delete", Table::ListItems),
        ("post delete", Table::Posts),
        ("unknown collection delete", Table::Records),
    ] {
        let b = row(desc, table);
        assert_eq!(str_at(&b, "operation", 0).as_deref(), Some("delete"));
        assert!(str_at(&b, "rkey", 0).is_some());
        assert!(str_at(&b, "rev", 0).is_some());
        assert_eq!(str_at(&b, "cid", 0), None, "{desc}");
        for col in b.schema().fields().iter().skip(8) {
            assert_eq!(
                b.column_by_name(col.name()).map(|c| c.null_count()),
                Some(1),
                "{desc}: {} should be null",
                col.name()
            );
        }
    }
}

#[test]
fn graph_records() {
    let b = row("follow create", Table::Follows);
    assert_eq!(
        str_at(&b, "subject", 0).as_deref(),
        Some("did:plc:followed")
    );
    assert_eq!(
        str_at(&b, "created_at", 0).as_deref(),
        Some("2024-11-19T07:06:43.000Z")
    );
    let b = row("block create", Table::Blocks);
    assert_eq!(str_at(&b, "subject", 0).as_deref(), Some("did:plc:blocked"));
    let b = row("listitem create", Table::ListItems);
    assert_eq!(str_at(&b, "subject", 0).as_deref(), Some("did:plc:listed"));
    assert_eq!(
        str_at(&b, "list", 0).as_deref(),
        Some("at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.graph.list/3lblist")
    );
    let b = row("pretty-printed with whitespace", Table::Follows);
    assert_eq!(str_at(&b, "subject", 0).as_deref(), Some("did:plc:x"));
    assert_eq!(str_at(&b, "created_at", 0), None);
}

#[test]
fn profiles() {
    let b = row(
        "profile update with avatar, banner and pinnedPost",
        Table::Profiles,
    );
    assert_eq!(str_at(&b, "display_name", 0).as_deref(), Some("Alice é"));
    assert_eq!(
        str_at(&b, "description", 0).as_deref(),
        Some("line one\nline two")
    );
    assert_eq!(
        str_at(&b, "avatar_cid", 0).as_deref(),
        Some("bafkreiavatar")
    );
    assert_eq!(
        str_at(&b, "banner_cid", 0).as_deref(),
        Some("bafkreibanner")
    );
    assert_eq!(
        str_at(&b, "pinned_post_cid", 0).as_deref(),
        Some("bafyreiba4ugsxsuhtvb2ih4ktm3uedrgm3yc2ls6wkdunnamqybubsb5yq")
    );
    assert!(str_at(&b, "pinned_post_uri", 0).is_some());
    assert_eq!(
        str_at(&b, "created_at", 0).as_deref(),
        Some("2024-01-01T00:00:00.000Z")
    );
    assert_eq!(str_at(&b, "rkey", 0).as_deref(), Some("self"));

    let b = row("profile create with legacy blob shape", Table::Profiles);
    assert_eq!(
        str_at(&b, "avatar_cid", 0).as_deref(),
        Some("bafkreilegacy")
    );
    assert_eq!(str_at(&b, "banner_cid", 0), None);
    assert_eq!(str_at(&b, "display_name", 0), None);
}

#[test]
fn posts_plain_reply_and_update() {
    let b = row("post plain with langs", Table::Posts);
    assert_eq!(str_at(&b, "text", 0).as_deref(), Some("hello world"));
    assert_eq!(list_at(&b, "langs", 0), strings(&["en"]));
    assert_eq!(str_at(&b, "reply_parent_uri", 0), None);
    assert_eq!(str_at(&b, "embed_kind", 0), None);
    assert_eq!(i32_at(&b, "embed_image_count", 0), None);
    // A post without facets has empty (not null) facet lists; `tags` is null when absent.
    assert_eq!(list_at(&b, "mentions", 0), Some(vec![]));
    assert_eq!(list_at(&b, "labels", 0), Some(vec![]));
    assert_eq!(list_at(&b, "tags", 0), None);

    let b = row("post reply", Table::Posts);
    assert_eq!(
        str_at(&b, "reply_root_uri", 0).as_deref(),
        Some("at://did:plc:root/app.bsky.feed.post/3lroot")
    );
    assert_eq!(str_at(&b, "reply_root_cid", 0).as_deref(), Some("bafyroot"));
    assert_eq!(
        str_at(&b, "reply_parent_uri", 0).as_deref(),
        Some("at://did:plc:parent/app.bsky.feed.post/3lparent")
    );
    assert_eq!(
        str_at(&b, "reply_parent_cid", 0).as_deref(),
        Some("bafyparent")
    );

    let b = row("post update", Table::Posts);
    assert_eq!(str_at(&b, "operation", 0).as_deref(), Some("update"));
    assert_eq!(str_at(&b, "text", 0).as_deref(), Some("edited"));

    let b = row("post without optional fields", Table::Posts);
    assert_eq!(str_at(&b, "text", 0), None);
    assert_eq!(list_at(&b, "langs", 0), None);
    let b = row("post with null optional fields", Table::Posts);
    assert_eq!(str_at(&b, "text", 0).as_deref(), Some("n"));
    assert_eq!(list_at(&b, "langs", 0), None);
    assert_eq!(str_at(&b, "embed_kind", 0), None);
}

#[test]
fn posts_embeds() {
    let b = row("post images embed", Table::Posts);
    assert_eq!(str_at(&b, "embed_kind", 0).as_deref(), Some("images"));
    assert_eq!(i32_at(&b, "embed_image_count", 0), Some(3));
    assert_eq!(str_at(&b, "embed_external_uri", 0), None);

    let b = row("post external embed", Table::Posts);
    assert_eq!(str_at(&b, "embed_kind", 0).as_deref(), Some("external"));
    assert_eq!(
        str_at(&b, "embed_external_uri", 0).as_deref(),
        Some("https://example.com/article")
    );
    assert_eq!(i32_at(&b, "embed_image_count", 0), None);

    let b = row("post record embed (quote)", Table::Posts);
    assert_eq!(str_at(&b, "embed_kind", 0).as_deref(), Some("record"));
    assert_eq!(
        str_at(&b, "embed_record_uri", 0).as_deref(),
        Some("at://did:plc:quoted/app.bsky.feed.post/3lquoted")
    );

    let b = row("post recordWithMedia embed", Table::Posts);
    assert_eq!(
        str_at(&b, "embed_kind", 0).as_deref(),
        Some("recordWithMedia")
    );
    assert_eq!(
        str_at(&b, "embed_record_uri", 0).as_deref(),
        Some("at://did:plc:quoted/app.bsky.feed.post/3lrwm")
    );
    assert_eq!(
        str_at(&b, "embed_external_uri", 0).as_deref(),
        Some("https://example.org/rwm")
    );

    let b = row("post video embed", Table::Posts);
    assert_eq!(str_at(&b, "embed_kind", 0).as_deref(), Some("video"));
    assert_eq!(i32_at(&b, "embed_image_count", 0), None);

    let b = row("post with unknown fields everywhere", Table::Posts);
    assert_eq!(str_at(&b, "embed_kind", 0).as_deref(), Some("somethingNew"));
}

#[test]
fn posts_facets_labels_and_tags() {
    let b = row("post facets mention link tag", Table::Posts);
    assert_eq!(list_at(&b, "mentions", 0), strings(&["did:plc:bob"]));
    assert_eq!(list_at(&b, "links", 0), strings(&["https://ex.com"]));
    assert_eq!(list_at(&b, "facet_tags", 0), strings(&["rust"]));

    let b = row("post self-labels tags and several langs", Table::Posts);
    assert_eq!(
        list_at(&b, "labels", 0),
        strings(&["nudity", "!no-unauthenticated"])
    );
    assert_eq!(list_at(&b, "tags", 0), strings(&["extra", "more"]));
    assert_eq!(list_at(&b, "langs", 0), strings(&["en", "pt-BR"]));
}

#[test]
fn escapes_unicode_and_nul() {
    let b = row("escaped unicode", Table::Posts);
    assert_eq!(str_at(&b, "text", 0).as_deref(), Some("café 😀 日"));

    let b = row("NUL inside text", Table::Posts);
    assert_eq!(str_at(&b, "text", 0).as_deref(), Some("before\0after"));

    let b = row("quotes backslashes and control escapes", Table::Posts);
    assert_eq!(str_at(&b, "did", 0).as_deref(), Some("did:plc:q\"uote"));
    assert_eq!(
        str_at(&b, "text", 0).as_deref(),
        Some("say \"hi\" \\ back/slash\ttab\nnew\r\u{8}\u{c}\u{1f}")
    );

    let b = row("post raw multibyte utf-8", Table::Posts);
    assert_eq!(
        str_at(&b, "text", 0).as_deref(),
        Some("日本語のテキスト 🦋 ça va")
    );
}

#[test]
fn lone_surrogates_in_records_are_kept_verbatim() {
    // serde_json refuses a lone surrogate in a string it decodes, but not in a record it only
    // skips over: such a record cannot be typed, so it is kept as its JSON text.
    let b = row(
        "lone surrogate inside an unknown record is kept verbatim",
        Table::Records,
    );
    assert_eq!(
        str_at(&b, "record_json", 0).as_deref(),
        Some(r#"{"trackName":"\ud800"}"#)
    );
    let b = row(
        "lone surrogate in a post text keeps the record verbatim",
        Table::Records,
    );
    assert_eq!(
        str_at(&b, "record_json", 0).as_deref(),
        Some(r#"{"$type":"app.bsky.feed.post","text":"x\udc00y"}"#)
    );
    assert_eq!(
        str_at(&b, "collection", 0).as_deref(),
        Some("app.bsky.feed.post")
    );
}

#[test]
fn records_of_the_wrong_shape_keep_their_json() {
    let b = row("like whose subject is not a strong ref", Table::Records);
    assert_eq!(
        str_at(&b, "record_json", 0).as_deref(),
        Some(
            r#"{"$type":"app.bsky.feed.like","subject":"at://did:plc:x/app.bsky.feed.post/1","createdAt":"2024-11-19T07:06:40Z"}"#
        )
    );
    assert_eq!(
        str_at(&b, "collection", 0).as_deref(),
        Some("app.bsky.feed.like")
    );
    let b = row(
        "known collection record that is not an object",
        Table::Records,
    );
    assert_eq!(str_at(&b, "record_json", 0).as_deref(), Some("[1,2,3]"));
    let b = row("unknown collection fm.teal create", Table::Records);
    let json = str_at(&b, "record_json", 0).expect("record_json");
    assert!(json.starts_with(r#"{"$type":"fm.teal.alpha.feed.play","trackName":"Song""#));
}

#[test]
fn identity_and_account() {
    let b = row("identity with handle", Table::Identity);
    assert_eq!(
        str_at(&b, "handle", 0).as_deref(),
        Some("alice.bsky.social")
    );
    assert_eq!(i64_at(&b, "seq", 0), Some(1_409_752_997));
    assert_eq!(
        str_at(&b, "time", 0).as_deref(),
        Some("2024-11-19T07:06:40.000Z")
    );
    assert_eq!(str_at(&b, "operation", 0), None);
    assert_eq!(str_at(&b, "collection", 0), None);
    let b = row("identity without handle", Table::Identity);
    assert_eq!(str_at(&b, "handle", 0), None);

    let b = row("account active", Table::Account);
    assert_eq!(bool_at(&b, "active", 0), Some(true));
    assert_eq!(str_at(&b, "status", 0), None);
    let b = row("account takendown", Table::Account);
    assert_eq!(bool_at(&b, "active", 0), Some(false));
    assert_eq!(str_at(&b, "status", 0).as_deref(), Some("takendown"));
    assert_eq!(i64_at(&b, "seq", 0), Some(1_409_753_014));

    let b = row(
        "account with extra commit object uses the kind",
        Table::Account,
    );
    assert_eq!(str_at(&b, "operation", 0), None);
}

#[test]
fn extreme_time_us() {
    let b = row("time_us zero", Table::Identity);
    assert_eq!(i64_at(&b, "time_us", 0), Some(0));
    let b = row("time_us i64 max", Table::Identity);
    assert_eq!(i64_at(&b, "time_us", 0), Some(i64::MAX));
    assert_eq!(i64_at(&b, "seq", 0), Some(i64::MAX));
    let case = valid("time_us i64 max");
    let event = Event::decode(&case.input).expect("decodes");
    // The partition of the last representable microsecond is computed without overflow.
    let key = event.partition();
    assert_eq!(key.hour.year, 294_247);
    assert!(key.hour.start_us() <= event.time_us);
}

fn long_post(text_json: &str) -> String {
    format!(
        r#"{{"did":"did:plc:long","time_us":1732000000000000,"kind":"commit","commit":{{"rev":"3l","operation":"create","collection":"app.bsky.feed.post","rkey":"3l","record":{{"$type":"app.bsky.feed.post","text":"{text_json}","createdAt":"2024-11-19T07:06:40Z"}},"cid":"bafy"}}}}"#
    )
}

#[test]
fn very_long_text_without_escapes_is_borrowed() {
    let text = "abcdefghij🦋".repeat(1 << 16); // 14 bytes * 65536 = ~0.9 MiB
    let line = long_post(&text);
    assert!(line.len() > 900_000);
    let event = Event::decode(line.as_bytes()).expect("decodes");
    let Some(Record::Post(post)) = event.commit().and_then(|c| c.record.as_ref()) else {
        panic!("not a post")
    };
    assert!(matches!(post.text, Some(Cow::Borrowed(t)) if t == text));
    let (_, b) = one_row(&event);
    assert_eq!(str_at(&b, "text", 0).map(|t| t.len()), Some(text.len()));
    assert_eq!(
        Event::decode(event.to_json().as_bytes()).expect("round trip"),
        event
    );
}

#[test]
fn very_long_text_with_escapes() {
    // 1 MiB of JSON text: escaped quotes, NULs, newlines and surrogate pairs.
    let unit_json = r#"x\"y\u0000z\n\ud83d\ude00\\"#;
    let unit = "x\"y\0z\n😀\\";
    let n = (1 << 20) / unit_json.len() + 1;
    let line = long_post(&unit_json.repeat(n));
    assert!(line.len() > 1 << 20);
    let event = Event::decode(line.as_bytes()).expect("decodes");
    let Some(Record::Post(post)) = event.commit().and_then(|c| c.record.as_ref()) else {
        panic!("not a post")
    };
    let expected = unit.repeat(n);
    assert_eq!(post.text.as_deref(), Some(expected.as_str()));
    let (_, b) = one_row(&event);
    assert_eq!(str_at(&b, "text", 0), Some(expected));
    assert_eq!(
        Event::decode(event.to_json().as_bytes()).expect("round trip"),
        event
    );
}

#[test]
fn very_long_unknown_record_is_kept_verbatim() {
    let big = format!(r#"{{"blob":"{}"}}"#, "q".repeat(2 << 20));
    let line = format!(
        r#"{{"did":"did:plc:big","time_us":1,"kind":"commit","commit":{{"rev":"r","operation":"create","collection":"place.stream.segment","rkey":"k","record":{big},"cid":"c"}}}}"#
    );
    let event = Event::decode(line.as_bytes()).expect("decodes");
    let (_, b) = one_row(&event);
    assert_eq!(str_at(&b, "record_json", 0), Some(big));
}

fn nested_record(collection: &str, depth: usize) -> String {
    format!(
        r#"{{"did":"did:plc:deep","time_us":1,"kind":"commit","commit":{{"rev":"r","operation":"create","collection":"{collection}","rkey":"k","record":{{"a":{}1{}}},"cid":"c"}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// A post whose embed nests `media` `depth` times: the one recursive typed shape.
fn nested_media(depth: usize) -> String {
    format!(
        r#"{{"did":"did:plc:deep","time_us":1,"kind":"commit","commit":{{"rev":"r","operation":"create","collection":"app.bsky.feed.post","rkey":"k","record":{{"text":"t","embed":{}{{}}{}}},"cid":"c"}}}}"#,
        r#"{"media":"#.repeat(depth),
        "}".repeat(depth)
    )
}

fn decode_record(line: &str) -> (Table, Record<'_>) {
    let event = Event::decode(line.as_bytes()).expect("decodes");
    let record = event
        .commit()
        .and_then(|c| c.record.clone())
        .expect("a record");
    assert_eq!(
        Event::decode(event.to_json().as_bytes()).expect("round trip"),
        event
    );
    (event.table(), record)
}

#[test]
fn deep_nesting_in_a_typed_record_hits_the_recursion_limit() {
    // Below serde_json's limit of 128 nested values the post is typed...
    let line = nested_media(100);
    let (table, record) = decode_record(&line);
    assert_eq!(table, Table::Posts);
    let Record::Post(post) = record else {
        panic!("not typed")
    };
    let mut depth = 0;
    let mut embed = post.embed.as_ref();
    while let Some(e) = embed {
        depth += 1;
        embed = e.media.as_deref();
    }
    assert_eq!(depth, 101);
    // ...beyond it the typed parse fails with an error (not a stack overflow), and the record
    // is kept verbatim as JSON, like any record that does not fit its shape.
    for depth in [200, 10_000, 1_000_000] {
        let line = nested_media(depth);
        let (table, record) = decode_record(&line);
        assert_eq!(table, Table::Records, "{depth}");
        let Record::Other(json) = record else {
            panic!("typed at depth {depth}")
        };
        assert!(json.starts_with(r#"{"text":"t","embed":{"media":{"media":"#));
        assert!(
            line.contains(&format!(r#""record":{json},"cid""#)),
            "verbatim at depth {depth}"
        );
        let err = serde_json::from_str::<Post<'_>>(&json).expect_err("too deep");
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }
}

#[test]
fn deep_nesting_in_skipped_json_is_accepted() {
    // Values the decoder does not look into (a record kept as JSON, unknown fields of typed
    // records and of the envelope) are skipped by serde_json without recursion, so their depth
    // costs no stack and is accepted.
    for depth in [124, 126, 10_000, 1_000_000] {
        for (collection, table) in [
            ("fm.teal.alpha.feed.play", Table::Records),
            (nsid::POST, Table::Posts),
        ] {
            let line = nested_record(collection, depth);
            let (got, _) = decode_record(&line);
            assert_eq!(got, table, "{collection} at depth {depth}");
        }
    }
    let line = format!(
        r#"{{"did":"d","time_us":1,"kind":"identity","extra":{}1{},"identity":{{"did":"d","seq":1,"time":"t"}}}}"#,
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    assert_eq!(
        Event::decode(line.as_bytes()).map(|e| e.table()).ok(),
        Some(Table::Identity)
    );
}

#[test]
fn deep_nesting_in_place_of_the_envelope_is_an_error() {
    for input in [
        "[".repeat(1_000_000),
        format!("{}1{}", "[".repeat(1_000_000), "]".repeat(1_000_000)),
        format!("{}{}", r#"{"a":"#.repeat(1_000_000), "1"),
        format!(r#"{{"did":{}"#, "[".repeat(1_000_000)),
    ] {
        let err = Event::decode(input.as_bytes()).expect_err("not an event");
        assert!(
            ["syntax", "truncated", "shape", "envelope"].contains(&err.category()),
            "{err}"
        );
    }
}

#[test]
fn event_keys_identify_deliveries() {
    let case = valid("like create without via");
    let a = Event::decode(&case.input).expect("decodes");
    let again = Event::decode(&case.input).expect("decodes");
    assert_eq!(a.key(), again.key());
    let case = valid("like create with via");
    let other = Event::decode(&case.input).expect("decodes");
    assert_ne!(a.key(), other.key());
    let (ci, cj) = (valid("identity with handle"), valid("account active"));
    let i = Event::decode(&ci.input).expect("decodes");
    let j = Event::decode(&cj.input).expect("decodes");
    assert_eq!((&*i.did, i.time_us), (&*j.did, j.time_us));
    assert_ne!(i.key(), j.key());
    assert!(matches!(&i.payload, Payload::Identity(_)));
}
