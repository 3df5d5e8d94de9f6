//! A writer's joins against a real local directory: a partition's batches joined into one
//! marked file that lists them, in order, then once more when the hour closes; a join
//! interrupted before it deleted its inputs finished at the next start.

use std::sync::Arc;

use arrow_array::RecordBatch;
use firehose_core::layout::{MERGED_FROM_KEY, origins_of, origins_overlap};
use firehose_core::{Event, HOUR_US};
use firehose_sink::{
    BatchName, FileWritten, LocalStorage, MergePolicy, OwnFiles, ParquetOptions, Storage, Writer,
    file_is_marked_duplicate_free, finish_merges, merge_files,
};
use parquet::file::metadata::ParquetMetaDataReader;

use crate::{events, read_back, temp_dir};

fn marked() -> ParquetOptions {
    ParquetOptions {
        duplicate_free: true,
        ..ParquetOptions::default()
    }
}

/// Writes the events in `batches` batches (names `<k>-0_<k>-9`), as a writer closing its files
/// every few minutes; returns each batch's files.
async fn write_batches(writer: &Writer, lines: &[String], batches: usize) -> Vec<Vec<FileWritten>> {
    let events: Vec<Event<'_>> = lines
        .iter()
        .map(|l| Event::decode(l.as_bytes()).unwrap())
        .collect();
    let per = events.len().div_ceil(batches);
    let mut out = Vec::new();
    for (k, chunk) in events.chunks(per).enumerate() {
        let name = BatchName::new(&format!("{}-0", k + 1), &format!("{}-9", k + 1)).unwrap();
        out.push(writer.write(&name, chunk).await.unwrap().files);
    }
    out
}

async fn files_of(storage: &LocalStorage, dir: &str) -> Vec<String> {
    storage
        .list(&format!("{dir}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect()
}

fn origins(data: &bytes::Bytes, path: &str) -> Vec<String> {
    let metadata = ParquetMetaDataReader::new().parse_and_finish(data).unwrap();
    let kv = metadata.file_metadata().key_value_metadata();
    origins_of(
        path,
        kv.into_iter()
            .flatten()
            .map(|e| (e.key.as_str(), e.value.as_deref())),
    )
}

#[tokio::test]
async fn a_partitions_batches_are_joined_into_one_marked_file_that_lists_them() {
    let dir = temp_dir("merge-join");
    let storage = Arc::new(LocalStorage::new(&dir));
    let writer = Writer::new(storage.clone(), marked());
    // 20,000 events over about three hours, in 24 batches: eight or so per partition.
    let lines = events();
    let batches = write_batches(&writer, &lines, 24).await;
    let mut own = OwnFiles::new(MergePolicy::default());
    let mut joins = 0;
    let mut rows_before = std::collections::BTreeMap::new();
    for files in &batches {
        for f in files {
            let dir = f.path.rsplit_once('/').unwrap().0.to_owned();
            *rows_before.entry(dir).or_insert(0) += f.rows;
        }
        own.add(files);
        // Nothing has closed yet: only partitions with four files are due.
        for job in own.due(i64::MIN, true) {
            assert_eq!(job.inputs.len(), 4, "{job:?}");
            let before: Vec<RecordBatch> = read_all(&storage, &job.inputs).await;
            let output = merge_files(&*storage, &job, &marked())
                .await
                .unwrap()
                .unwrap();
            joins += 1;
            // The rows are the inputs' rows, in order.
            let data = storage.get(&output.path).await.unwrap();
            let joined = read_back(data.clone());
            let expected = arrow::compute::concat_batches(&before[0].schema(), &before).unwrap();
            assert_eq!(joined, expected);
            assert_eq!(output.rows, joined.num_rows());
            assert!(file_is_marked_duplicate_free(data.clone()).unwrap());
            // It lists the batches it holds, and only it holds them now.
            let listed = origins(&data, &output.path);
            assert!(listed.len() >= job.inputs.len(), "{listed:?}");
            let left = files_of(&storage, &job.partition).await;
            assert!(left.contains(&output.path));
            for input in &job.inputs {
                assert!(
                    !left.contains(&input.path),
                    "{} was not deleted",
                    input.path
                );
            }
            own.merged(&job, output);
        }
    }
    assert!(joins > 0);
    // Every hour closes: each partition becomes one file, with all its rows.
    for job in own.due(i64::MAX, true) {
        merge_files(&*storage, &job, &marked())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(own.partitions(), 0);
    for (partition, rows) in rows_before {
        let left = files_of(&storage, &partition).await;
        assert_eq!(left.len(), 1, "{partition}: {left:?}");
        let data = storage.get(&left[0]).await.unwrap();
        assert_eq!(read_back(data.clone()).num_rows(), rows, "{partition}");
        assert!(file_is_marked_duplicate_free(data).unwrap());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn read_all(storage: &LocalStorage, files: &[FileWritten]) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for f in files {
        out.push(read_back(storage.get(&f.path).await.unwrap()));
    }
    out
}

#[tokio::test]
async fn only_marked_files_are_joined_and_a_closed_hour_is_joined_once_more() {
    let dir = temp_dir("merge-closed");
    let storage = Arc::new(LocalStorage::new(&dir));
    let lines: Vec<String> = events().into_iter().take(3_000).collect();
    // Unmarked batches (events that may be elsewhere too) are never joined.
    let unmarked = Writer::new(storage.clone(), ParquetOptions::default());
    let batches = write_batches(&unmarked, &lines, 3).await;
    let mut own = OwnFiles::new(MergePolicy::default());
    for files in &batches {
        own.add(files);
    }
    let jobs = own.due(i64::MAX, true);
    assert!(!jobs.is_empty());
    for job in &jobs {
        assert_eq!(merge_files(&*storage, job, &marked()).await.unwrap(), None);
    }
    std::fs::remove_dir_all(&dir).unwrap();

    // Marked: two files of an hour are joined only once the hour has closed.
    let storage = Arc::new(LocalStorage::new(&dir));
    let writer = Writer::new(storage.clone(), marked());
    let batches = write_batches(&writer, &lines, 2).await;
    let mut own = OwnFiles::new(MergePolicy::default());
    for files in &batches {
        own.add(files);
    }
    let first = &batches[0][0];
    let hour_end = firehose_sink::partition_of(&first.path)
        .unwrap()
        .hour
        .start_us()
        + HOUR_US;
    assert!(own.due(hour_end - 1, true).is_empty());
    let jobs = own.due(hour_end, true);
    assert!(!jobs.is_empty());
    for job in &jobs {
        assert!(
            merge_files(&*storage, job, &marked())
                .await
                .unwrap()
                .is_some()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_join_interrupted_before_it_deleted_its_inputs_is_finished_at_start() {
    let dir = temp_dir("merge-finish");
    let storage = Arc::new(LocalStorage::new(&dir));
    let writer = Writer::new(storage.clone(), marked());
    let lines: Vec<String> = events().into_iter().take(4_000).collect();
    let batches = write_batches(&writer, &lines, 7).await;
    // The partition of the first identity file, and all its files, oldest first.
    let partition = batches[0][0].path.rsplit_once('/').unwrap().0.to_owned();
    let inputs: Vec<FileWritten> = batches
        .iter()
        .flatten()
        .filter(|f| f.path.starts_with(&format!("{partition}/")))
        .cloned()
        .collect();
    assert!(inputs.len() >= 5, "{inputs:?}");
    let keep: Vec<(String, bytes::Bytes)> = {
        let mut v = Vec::new();
        for f in &inputs {
            v.push((f.path.clone(), storage.get(&f.path).await.unwrap()));
        }
        v
    };
    let job = |files: &[FileWritten]| firehose_sink::MergeJob {
        partition: partition.clone(),
        table: files[0].table,
        inputs: files.to_vec(),
        tier: 1,
    };
    // A first join of three files, then a second of the first join and two more.
    let first = merge_files(&*storage, &job(&inputs[..3]), &marked())
        .await
        .unwrap()
        .unwrap();
    let first_data = storage.get(&first.path).await.unwrap();
    let mut second_inputs = vec![first.clone()];
    second_inputs.extend_from_slice(&inputs[3..5]);
    let second = merge_files(&*storage, &job(&second_inputs), &marked())
        .await
        .unwrap()
        .unwrap();
    let tidy = files_of(&storage, &partition).await;
    // As if both had been cut off before deleting their inputs: every input is back.
    storage.put(&first.path, first_data).await.unwrap();
    for (path, data) in &keep[..5] {
        storage.put(path, data.clone()).await.unwrap();
    }
    let mut all = Vec::new();
    for path in files_of(&storage, &partition).await {
        let data = storage.get(&path).await.unwrap();
        all.push(origins(&data, &path));
    }
    assert!(origins_overlap(all.iter().map(Vec::as_slice)));
    assert_eq!(finish_merges(&*storage, &partition).await.unwrap(), 6);
    assert_eq!(files_of(&storage, &partition).await, tidy);
    assert!(tidy.contains(&second.path));
    // The second join lists every batch of the five files.
    let data = storage.get(&second.path).await.unwrap();
    assert_eq!(origins(&data, &second.path).len(), 5);
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&data)
        .unwrap();
    assert!(
        metadata
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .any(|kv| kv.key == MERGED_FROM_KEY)
    );
    // Nothing left to finish.
    assert_eq!(finish_merges(&*storage, &partition).await.unwrap(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
