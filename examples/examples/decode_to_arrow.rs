//! Decode Jetstream JSON lines into typed events and convert them to one Arrow record batch
//! per table, the way the writer does before it writes Parquet.
//!
//! `cargo run -p firehose-examples --example decode_to_arrow`

use arrow_array::{Array, StringArray};
use firehose_core::{BatchBuilder, Event, Record, Table};
use firehose_synth::{Config, Generator};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Ten thousand realistic events as Jetstream would send them, one JSON object per line.
    let lines: Vec<String> = Generator::new(Config {
        seed: 1,
        ..Config::default()
    })
    .take(10_000)
    .map(|e| e.to_json())
    .collect();

    // Decoding borrows from the lines; the builder copies what it keeps into Arrow buffers.
    let mut builder = BatchBuilder::new();
    let mut unknown_collections = 0;
    for line in &lines {
        let event = Event::decode(line.as_bytes())?;
        if event
            .commit()
            .is_some_and(|c| matches!(c.record, Some(Record::Other(_))))
        {
            unknown_collections += 1;
        }
        builder.push(&event);
    }

    let batches = builder.finish()?;
    let rows: usize = batches.iter().map(|(_, b)| b.num_rows()).sum();
    assert_eq!(rows, lines.len(), "every event became a row");
    for (table, batch) in &batches {
        println!(
            "{:<10} {:>6} rows  {:>2} columns",
            table.name(),
            batch.num_rows(),
            batch.num_columns()
        );
    }
    println!("{unknown_collections} records of other collections kept as JSON in `records`");

    // Columns are typed: read the text of the first post.
    let (_, posts) = batches
        .iter()
        .find(|(t, _)| *t == Table::Posts)
        .ok_or("no posts")?;
    let text = posts.column_by_name("text").ok_or("no text column")?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("text is not a string column")?;
    println!("first post: {:?}", text.value(0));
    assert!(!text.is_null(0));
    Ok(())
}
