//! Feeds arbitrary bytes to the Jetstream decoder.
//!
//! Input that is not an event must be refused with an error, never a panic. Input that decodes
//! must survive a round trip (its JSON encoding decodes to an equal event) and convert to
//! exactly one Arrow row, in the event's table.
#![no_main]

use firehose_core::{Event, record_batches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = Event::decode(data) else {
        return;
    };
    let json = event.to_json();
    match Event::decode(json.as_bytes()) {
        Ok(again) => assert_eq!(again, event, "round trip changed the event\n{json}"),
        Err(e) => panic!("re-encoded event does not decode: {e}\n{json}"),
    }
    let batches = match record_batches(std::slice::from_ref(&event)) {
        Ok(batches) => batches,
        Err(e) => panic!("Arrow conversion failed: {e}"),
    };
    assert_eq!(batches.len(), 1, "one event, one table");
    assert_eq!(batches[0].0, event.table());
    assert_eq!(batches[0].1.num_rows(), 1, "one event, one row");
});
