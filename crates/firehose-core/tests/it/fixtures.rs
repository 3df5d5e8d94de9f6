//! The project's own fixtures: every valid case lands in its table, round-trips and converts to
//! Arrow; every invalid case fails with its error category and says where.

use std::collections::{BTreeMap, BTreeSet};

use firehose_core::record::nsid;
use firehose_core::{Event, Kind, Operation, Payload, Record, Table, record_batches};

use crate::common::{Case, cases, i64_at, str_at};

fn decode(case: &Case) -> Event<'_> {
    Event::decode(&case.input).unwrap_or_else(|e| {
        panic!(
            "valid.cases:{} ({}) does not decode: {e}",
            case.line, case.desc
        )
    })
}

#[test]
fn valid_cases_land_in_their_table() {
    let cases = cases("valid.cases");
    assert!(cases.len() >= 40, "only {} valid cases", cases.len());
    for case in &cases {
        let event = decode(case);
        let expected: Table = case.expect.parse().expect("expected table name");
        assert_eq!(
            event.table(),
            expected,
            "valid.cases:{} ({})",
            case.line,
            case.desc
        );
        assert_eq!(event.partition().table, expected);
    }
}

#[test]
fn valid_cases_round_trip_through_json() {
    for case in cases("valid.cases") {
        let event = decode(&case);
        let json = event.to_json();
        assert!(!json.is_empty(), "{}: empty encoding", case.desc);
        let again = Event::decode(json.as_bytes()).unwrap_or_else(|e| {
            panic!(
                "{}: re-encoded event does not decode: {e}\n{json}",
                case.desc
            )
        });
        assert_eq!(again, event, "{}", case.desc);
        assert_eq!(again.to_json(), json, "{}: encoding is stable", case.desc);
    }
}

#[test]
fn valid_cases_convert_to_one_row_each() {
    for case in cases("valid.cases") {
        let event = decode(&case);
        let (table, batch) = crate::common::one_row(&event);
        assert_eq!(table.name(), case.expect, "{}", case.desc);
        assert_eq!(batch.schema(), firehose_core::schema(table));
        assert_eq!(str_at(&batch, "did", 0).as_deref(), Some(&*event.did));
        assert_eq!(i64_at(&batch, "time_us", 0), Some(event.time_us));
        assert_eq!(
            str_at(&batch, "kind", 0).as_deref(),
            Some(event.kind().as_str())
        );
        let commit = event.commit();
        assert_eq!(
            str_at(&batch, "operation", 0).as_deref(),
            commit.map(|c| c.operation.as_str())
        );
        assert_eq!(
            str_at(&batch, "collection", 0).as_deref(),
            commit.map(|c| c.collection.as_ref())
        );
        assert_eq!(
            str_at(&batch, "cid", 0).as_deref(),
            commit.and_then(|c| c.cid.as_deref())
        );
        if table == Table::Records {
            // The record JSON is kept exactly as it was in the input.
            let json = str_at(&batch, "record_json", 0);
            let Some(Record::Other(other)) = commit.and_then(|c| c.record.as_ref()) else {
                assert_eq!(json, None, "{}: a delete has no record", case.desc);
                continue;
            };
            assert_eq!(json.as_deref(), Some(other.as_ref()));
            let input = std::str::from_utf8(&case.input).expect("valid cases are UTF-8");
            assert!(
                input.contains(&format!("\"record\":{other}")),
                "{}: record_json is not verbatim: {other}",
                case.desc
            );
        }
    }
}

#[test]
fn all_valid_cases_in_one_conversion() {
    let cases = cases("valid.cases");
    let events: Vec<Event<'_>> = cases.iter().map(decode).collect();
    let mut expected: BTreeMap<Table, usize> = BTreeMap::new();
    for e in &events {
        *expected.entry(e.table()).or_default() += 1;
    }
    let batches = record_batches(&events).expect("arrow conversion");
    let got: BTreeMap<Table, usize> = batches.iter().map(|(t, b)| (*t, b.num_rows())).collect();
    assert_eq!(got, expected);
    // Every table is exercised by the fixtures.
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), Table::ALL);
}

#[test]
fn valid_cases_cover_every_kind_operation_and_collection() {
    let cases = cases("valid.cases");
    let events: Vec<Event<'_>> = cases.iter().map(decode).collect();
    let kinds: BTreeSet<Kind> = events.iter().map(Event::kind).collect();
    assert_eq!(kinds.len(), 3);
    let ops: Vec<Operation> = events
        .iter()
        .filter_map(|e| e.commit().map(|c| c.operation))
        .collect();
    for op in [Operation::Create, Operation::Update, Operation::Delete] {
        assert!(ops.contains(&op), "no {op:?}");
    }
    let collections: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e.commit().map(|c| c.collection.as_ref()))
        .collect();
    for c in [
        nsid::POST,
        nsid::LIKE,
        nsid::REPOST,
        nsid::FOLLOW,
        nsid::BLOCK,
        nsid::LISTITEM,
        nsid::PROFILE,
    ] {
        assert!(collections.contains(c), "no {c}");
    }
    assert!(collections.iter().any(|c| c.starts_with("fm.teal.")));
    assert!(collections.iter().any(|c| c.starts_with("place.stream.")));
    // Records of a known collection that did not fit its typed shape.
    assert!(events.iter().any(|e| {
        e.table() == Table::Records
            && e.commit()
                .is_some_and(|c| Table::for_collection(&c.collection) != Table::Records)
    }));
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.payload, Payload::Account(a) if a.status.is_some()))
    );
}

#[test]
fn invalid_cases_fail_with_their_category() {
    let cases = cases("invalid.cases");
    assert!(cases.len() >= 40, "only {} invalid cases", cases.len());
    let mut categories = BTreeSet::new();
    for case in &cases {
        let err = match Event::decode(&case.input) {
            Ok(event) => panic!(
                "invalid.cases:{} ({}) decoded: {event:?}",
                case.line, case.desc
            ),
            Err(e) => e,
        };
        assert_eq!(
            err.category(),
            case.expect,
            "invalid.cases:{} ({}): {err}",
            case.line,
            case.desc
        );
        categories.insert(err.category());
        let message = err.to_string();
        if err.category() == "envelope" {
            assert!(message.starts_with("not a Jetstream event: "), "{message}");
        } else {
            // The errors say where: the parser's line and column, or the offset of bad UTF-8.
            assert!(
                message.contains("line 1 column") || message.contains("at byte"),
                "{}: {message}",
                case.desc
            );
        }
    }
    assert_eq!(categories.len(), 4, "every category is exercised");
}

#[test]
fn invalid_inputs_hold_what_they_say() {
    // Guards against the fixture file being "fixed" by an editor.
    let cases = cases("invalid.cases");
    let by_desc = |d: &str| {
        cases
            .iter()
            .find(|c| c.desc == d)
            .unwrap_or_else(|| panic!("no case {d}"))
    };
    assert!(by_desc("empty line").input.is_empty());
    assert!(std::str::from_utf8(&by_desc("invalid UTF-8 byte in the envelope").input).is_err());
    assert!(std::str::from_utf8(&by_desc("invalid UTF-8 byte inside the record").input).is_err());
    assert!(
        by_desc("UTF-8 byte order mark")
            .input
            .starts_with(b"\xef\xbb\xbf")
    );
    assert!(
        by_desc("raw control character in a string")
            .input
            .contains(&1)
    );
}
