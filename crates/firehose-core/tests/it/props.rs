//! Property tests: generated events survive JSON encoding and decoding unchanged, and the Arrow
//! builder keeps every event as a row of its table.

use std::borrow::Cow;
use std::collections::BTreeMap;

use firehose_core::record::{
    Blob, ByteSlice, Embed, EmbedRecord, External, Facet, FacetFeature, Image, Link, ReplyRef,
    SelfLabel, SelfLabels, nsid,
};
use firehose_core::{
    Account, Commit, Engagement, Event, GraphEdge, Identity, ListItem, Operation, Payload, Post,
    Profile, Record, StrongRef, Table, record_batches,
};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use crate::common::{cases, i64_at, str_at};

type S = Cow<'static, str>;

/// Strings heavy in what JSON must escape: quotes, backslashes, control characters (NUL
/// included), non-ASCII and astral characters; sometimes any Unicode at all.
fn text() -> BoxedStrategy<S> {
    let special = prop_oneof![
        Just('"'),
        Just('\\'),
        Just('/'),
        Just('\0'),
        Just('\n'),
        Just('\u{1f}'),
        Just('\u{7f}'),
        Just('é'),
        Just('\u{2028}'),
        Just('😀'),
        Just('\u{fffd}'),
        proptest::char::range('a', 'z'),
        any::<char>(),
    ];
    prop_oneof![
        3 => vec(special, 0..24).prop_map(String::from_iter),
        1 => any::<String>(),
        1 => "[a-z0-9:.]{0,12}",
    ]
    .prop_map(Cow::Owned)
    .boxed()
}

fn opt_text() -> BoxedStrategy<Option<S>> {
    of(text()).boxed()
}

fn strong_ref() -> BoxedStrategy<StrongRef<'static>> {
    (text(), text())
        .prop_map(|(uri, cid)| StrongRef { uri, cid })
        .boxed()
}

fn blob() -> BoxedStrategy<Blob<'static>> {
    (
        opt_text(),
        of(text().prop_map(|link| Link { link })),
        opt_text(),
        opt_text(),
        of(any::<u64>()),
    )
        .prop_map(|(blob_type, link, cid, mime_type, size)| Blob {
            blob_type,
            link,
            cid,
            mime_type,
            size,
        })
        .boxed()
}

fn embed_leaf() -> BoxedStrategy<Embed<'static>> {
    (
        opt_text(),
        of(vec(
            (opt_text(), of(blob())).prop_map(|(alt, image)| Image { alt, image }),
            0..4,
        )),
        of(
            (opt_text(), opt_text(), opt_text()).prop_map(|(uri, title, description)| External {
                uri,
                title,
                description,
            }),
        ),
        of(
            (opt_text(), opt_text(), opt_text(), of(strong_ref())).prop_map(
                |(embed_type, uri, cid, record)| EmbedRecord {
                    embed_type,
                    uri,
                    cid,
                    record,
                },
            ),
        ),
        of(blob()),
    )
        .prop_map(|(embed_type, images, external, record, video)| Embed {
            embed_type,
            images,
            external,
            record,
            media: None,
            video,
        })
        .boxed()
}

fn embed() -> BoxedStrategy<Embed<'static>> {
    (embed_leaf(), of(embed_leaf()))
        .prop_map(|(mut e, media)| {
            e.media = media.map(Box::new);
            e
        })
        .boxed()
}

fn facet() -> BoxedStrategy<Facet<'static>> {
    (
        of(
            (any::<u64>(), any::<u64>()).prop_map(|(byte_start, byte_end)| ByteSlice {
                byte_start,
                byte_end,
            }),
        ),
        vec(
            (opt_text(), opt_text(), opt_text(), opt_text()).prop_map(
                |(feature_type, did, uri, tag)| FacetFeature {
                    feature_type,
                    did,
                    uri,
                    tag,
                },
            ),
            0..3,
        ),
    )
        .prop_map(|(index, features)| Facet { index, features })
        .boxed()
}

fn post() -> BoxedStrategy<Post<'static>> {
    (
        (opt_text(), opt_text(), opt_text(), of(vec(text(), 0..3))),
        of((strong_ref(), strong_ref()).prop_map(|(root, parent)| ReplyRef { root, parent })),
        of(embed()),
        of(vec(facet(), 0..3)),
        of(
            (opt_text(), vec(text(), 0..3)).prop_map(|(labels_type, values)| SelfLabels {
                labels_type,
                values: values.into_iter().map(|val| SelfLabel { val }).collect(),
            }),
        ),
        of(vec(text(), 0..3)),
    )
        .prop_map(
            |((record_type, text, created_at, langs), reply, embed, facets, labels, tags)| Post {
                record_type,
                text,
                created_at,
                langs,
                reply,
                embed,
                facets,
                labels,
                tags,
            },
        )
        .boxed()
}

fn engagement() -> BoxedStrategy<Engagement<'static>> {
    (opt_text(), strong_ref(), of(strong_ref()), opt_text())
        .prop_map(|(record_type, subject, via, created_at)| Engagement {
            record_type,
            subject,
            via,
            created_at,
        })
        .boxed()
}

fn graph_edge() -> BoxedStrategy<GraphEdge<'static>> {
    (opt_text(), text(), opt_text())
        .prop_map(|(record_type, subject, created_at)| GraphEdge {
            record_type,
            subject,
            created_at,
        })
        .boxed()
}

fn profile() -> BoxedStrategy<Profile<'static>> {
    (
        opt_text(),
        opt_text(),
        opt_text(),
        of(blob()),
        of(blob()),
        of(strong_ref()),
        opt_text(),
    )
        .prop_map(
            |(record_type, display_name, description, avatar, banner, pinned_post, created_at)| {
                Profile {
                    record_type,
                    display_name,
                    description,
                    avatar,
                    banner,
                    pinned_post,
                    created_at,
                }
            },
        )
        .boxed()
}

/// Any JSON value, nested a few levels.
fn json_value() -> BoxedStrategy<serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        text().prop_map(|s| Value::String(s.into_owned())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((text(), inner), 0..6).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.into_owned(), v)).collect()
            )),
        ]
    })
    .boxed()
}

/// A JSON object as text, compact or pretty-printed (its inner whitespace is kept verbatim).
fn json_object() -> BoxedStrategy<String> {
    (vec((text(), json_value()), 0..6), any::<bool>())
        .prop_map(|(kv, pretty)| {
            let object = serde_json::Value::Object(
                kv.into_iter().map(|(k, v)| (k.into_owned(), v)).collect(),
            );
            if pretty {
                serde_json::to_string_pretty(&object)
            } else {
                serde_json::to_string(&object)
            }
            .expect("a Value always serialises")
        })
        .boxed()
}

/// A collection with no typed table.
fn unknown_collection() -> BoxedStrategy<S> {
    prop_oneof![
        Just("fm.teal.alpha.feed.play".to_owned()),
        Just("place.stream.livestream".to_owned()),
        Just("app.bsky.feed.threadgate".to_owned()),
        "[a-z]{1,6}\\.[a-z]{1,6}\\.[a-zA-Z.]{1,12}",
        text().prop_map(Cow::into_owned),
    ]
    .prop_filter("a typed collection", |c| {
        Table::for_collection(c) == Table::Records
    })
    .prop_map(Cow::Owned)
    .boxed()
}

/// A collection and a record of it (typed for the known collections).
fn collection_and_record() -> BoxedStrategy<(S, Option<Record<'static>>)> {
    let known = |name: &'static str| Just(Cow::Borrowed(name));
    prop_oneof![
        (
            known(nsid::POST),
            of(post().prop_map(|p| Record::Post(Box::new(p))))
        ),
        (known(nsid::LIKE), of(engagement().prop_map(Record::Like))),
        (
            known(nsid::REPOST),
            of(engagement().prop_map(Record::Repost))
        ),
        (
            known(nsid::FOLLOW),
            of(graph_edge().prop_map(Record::Follow))
        ),
        (known(nsid::BLOCK), of(graph_edge().prop_map(Record::Block))),
        (
            known(nsid::LISTITEM),
            of((opt_text(), text(), text(), opt_text()).prop_map(
                |(record_type, subject, list, created_at)| Record::ListItem(ListItem {
                    record_type,
                    subject,
                    list,
                    created_at,
                })
            ))
        ),
        (
            known(nsid::PROFILE),
            of(profile().prop_map(|p| Record::Profile(Box::new(p))))
        ),
        (
            unknown_collection(),
            of(json_object().prop_map(|j| Record::Other(Cow::Owned(j))))
        ),
    ]
    .boxed()
}

fn operation() -> BoxedStrategy<Operation> {
    prop_oneof![
        Just(Operation::Create),
        Just(Operation::Update),
        Just(Operation::Delete)
    ]
    .boxed()
}

fn payload() -> BoxedStrategy<Payload<'static>> {
    prop_oneof![
        6 => (text(), operation(), collection_and_record(), text(), opt_text()).prop_map(
            |(rev, operation, (collection, record), rkey, cid)| Payload::Commit(Commit {
                rev,
                operation,
                collection,
                rkey,
                record,
                cid,
            })
        ),
        1 => (text(), opt_text(), any::<i64>(), text())
            .prop_map(|(did, handle, seq, time)| Payload::Identity(Identity {
                did,
                handle,
                seq,
                time
            })),
        1 => (any::<bool>(), text(), any::<i64>(), text(), opt_text()).prop_map(
            |(active, did, seq, time, status)| Payload::Account(Account {
                active,
                did,
                seq,
                time,
                status
            })
        ),
    ]
    .boxed()
}

/// Any event: every kind, operation and record variant.
pub(crate) fn event() -> BoxedStrategy<Event<'static>> {
    (
        text(),
        prop_oneof![
            Just(0i64),
            Just(i64::MAX),
            0..=i64::MAX,
            1_700_000_000_000_000i64..1_900_000_000_000_000
        ],
        payload(),
    )
        .prop_map(|(did, time_us, payload)| Event {
            did,
            time_us,
            payload,
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_round_trip(event in event()) {
        let json = event.to_json();
        let decoded = Event::decode(json.as_bytes());
        prop_assert!(decoded.is_ok(), "{:?}\n{}", decoded.err(), json);
        let decoded = decoded.expect("checked");
        prop_assert_eq!(&decoded, &event);
        prop_assert_eq!(decoded.table(), event.table());
        prop_assert_eq!(decoded.to_json(), json);
    }

}

proptest! {
    // Each case converts up to 24 events: fewer cases keep this test to seconds in debug builds.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn arrow_keeps_every_row_in_its_table(events in vec(event(), 0..24)) {
        let batches = record_batches(&events).expect("arrow conversion");
        let mut expected: BTreeMap<Table, Vec<&Event<'_>>> = BTreeMap::new();
        for e in &events {
            expected.entry(e.table()).or_default().push(e);
        }
        let got: BTreeMap<Table, usize> = batches.iter().map(|(t, b)| (*t, b.num_rows())).collect();
        let want: BTreeMap<Table, usize> = expected.iter().map(|(t, v)| (*t, v.len())).collect();
        prop_assert_eq!(got, want);
        for (table, batch) in &batches {
            prop_assert_eq!(batch.schema(), firehose_core::schema(*table));
            for (row, e) in expected[table].iter().enumerate() {
                prop_assert_eq!(str_at(batch, "did", row), Some(e.did.to_string()));
                prop_assert_eq!(i64_at(batch, "time_us", row), Some(e.time_us));
                prop_assert_eq!(str_at(batch, "kind", row), Some(e.kind().as_str().to_owned()));
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Cutting or corrupting a valid line never panics; whatever still decodes round-trips.
    #[test]
    fn damaged_fixtures_never_panic(
        pick in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let cases = cases("valid.cases");
        let mut input = pick.get(&cases).input.clone();
        for (at, byte) in flips {
            let i = at.index(input.len());
            input[i] = byte;
        }
        input.truncate(cut.index(input.len() + 1));
        if let Ok(event) = Event::decode(&input) {
            let json = event.to_json();
            prop_assert_eq!(Event::decode(json.as_bytes()).ok(), Some(event.clone()));
            let batches = record_batches(std::slice::from_ref(&event)).expect("arrow");
            prop_assert_eq!(batches.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 1);
        }
    }
}
