//! Several writers on one Redis stream. See: issue 15 (a writer stopped past the claim timeout
//! stored, once it went on, the entries another writer had taken over and stored: both under
//! different names).

use std::time::Duration;

use crate::harness::{
    Deployment, START_US, Tally, expected, figure, free_port, key_duplicates, metrics, mock, total,
    wait_until,
};

/// `ingest` and two `write` processes; one is stopped with SIGSTOP past `--claim-idle` while it
/// holds entries, the other takes them over, then the first goes on. Nothing is lost and
/// nothing is stored twice, by the product's event key, before any de-duplication.
#[test]
fn a_writer_stopped_past_the_claim_timeout_stores_nothing_twice() {
    const SCENARIO: &str = "writers::stopped_past_claim_idle";
    const EVENTS: u64 = 200_000;
    const RATE: f64 = 20_000.0;
    let Some(d) = Deployment::start("stopped-writer", &[]) else {
        return;
    };
    let sent = expected(71, EVENTS, Some(RATE));
    let (_mock, url) = mock(71, EVENTS, &["--rate", "20000"]);
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let ingest = d.ingest(&url, &ingest_addr, START_US, &[]);
    let (a_addr, b_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    // Files close after 2 s (the harness's --max-file-age): 4 s idle means stopped.
    let claim = ["--claim-idle", "4s"];
    let a = d.writer("wa", &a_addr, &claim);
    let b = d.writer("wb", &b_addr, &claim);
    let rows = |addr: &str| total(&metrics(addr), "firehose_writer_rows_total");
    wait_until("both writers store", Duration::from_secs(120), || {
        rows(&a_addr) > 0.0 && rows(&b_addr) > 0.0
    });
    // Stop the first while events keep coming; the other takes its entries over.
    wait_until("events wait in Redis", Duration::from_secs(60), || {
        d.unacked() > 0
    });
    a.pause();
    wait_until(
        "the other writer takes the stopped one's entries over",
        Duration::from_secs(120),
        || total(&metrics(&b_addr), "firehose_writer_entries_claimed_total") > 0.0,
    );
    let claimed = total(&metrics(&b_addr), "firehose_writer_entries_claimed_total");
    a.resume();
    // With two writers the checkpoint can stay behind the last event (a writer that flushes
    // last raises it only to the newest event it saw itself): wait for the dataset instead.
    wait_until(
        "every event is stored and acknowledged",
        Duration::from_secs(300),
        || {
            std::thread::sleep(Duration::from_secs(1));
            d.unacked() == 0 && crate::harness::deduplicated(d.dataset().0).0 == sent
        },
    );
    let abandoned = total(&metrics(&a_addr), "firehose_writer_batches_abandoned_total");
    let (a_rows, b_rows) = (rows(&a_addr), rows(&b_addr));
    assert_eq!(a.terminate(), 0);
    assert_eq!(b.terminate(), 0);
    assert_eq!(ingest.terminate(), 0);
    let files =
        d.s3.parquet_files(crate::harness::BUCKET, crate::harness::PREFIX);
    let (by_key, rows) = key_duplicates(&files);
    let (stored, dead) = crate::harness::dataset(files);
    let tally = Tally::of(&sent, &stored);
    figure(
        SCENARIO,
        format_args!(
            "{} events; writer A stopped past --claim-idle 4s, writer B took over {claimed} of \
             its entries, A abandoned {abandoned} batches when it went on; rows written: A \
             {a_rows}, B {b_rows}; {rows} rows: {} lost, {by_key} duplicates by event key \
             before de-duplication, {} unexpected, {dead} dead letters",
            tally.sent,
            tally.lost.len(),
            tally.unexpected
        ),
    );
    assert!(
        tally.lost.is_empty(),
        "lost {:?}",
        &tally.lost[..tally.lost.len().min(5)]
    );
    assert_eq!(
        (by_key, tally.duplicates, tally.unexpected, dead),
        (0, 0, 0, 0)
    );
    assert_eq!(rows as u64, EVENTS);
}
