//! A table provider that removes duplicate events by event key.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use firehose_core::Table;
use firehose_core::layout::origins_overlap;
use futures::StreamExt;

use crate::marks::{Mark, Marks};

/// Wraps a table's file listing and keeps one row per event key.
///
/// Filters are pushed into the wrapped scan (partition pruning, Parquet statistics and row
/// filters all still apply) and evaluated before the de-duplication, which is correct because
/// every delivery of an event carries the same record. The de-duplication ([`DedupExec`]) is a
/// streaming filter: rows are hash-partitioned by key and each partition remembers a 128-bit
/// hash of every key it has passed, dropping rows whose key it has seen. It reads only the key
/// columns to decide, keeps the first delivery, and stops as soon as a `LIMIT` is satisfied.
pub(crate) struct DedupTable {
    table: Table,
    inner: Arc<dyn TableProvider>,
    marks: Marks,
}

impl fmt::Debug for DedupTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupTable")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl DedupTable {
    pub(crate) fn new(table: Table, inner: Arc<dyn TableProvider>) -> Self {
        DedupTable {
            table,
            inner,
            marks: Marks::default(),
        }
    }
}

#[async_trait]
impl TableProvider for DedupTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Every filter is applied inside `scan`, before the de-duplication.
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let wanted: Vec<String> = match projection {
            Some(p) => p.iter().map(|&i| schema.field(i).name().clone()).collect(),
            None => schema.fields().iter().map(|f| f.name().clone()).collect(),
        };
        // Read the wanted columns, the key and what the filters need, with the filters' column
        // references made unqualified (they are evaluated on the scan's own schema).
        let mut read: BTreeSet<String> = wanted.iter().cloned().collect();
        read.extend(self.table.key_columns().iter().map(|&k| k.to_owned()));
        let mut unqualified = Vec::with_capacity(filters.len());
        for f in filters {
            let f = f
                .clone()
                .transform(|e| {
                    Ok(match e {
                        Expr::Column(c) => {
                            read.insert(c.name.clone());
                            Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                        }
                        e => Transformed::no(e),
                    })
                })?
                .data;
            unqualified.push(f);
        }
        let read_indices: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| read.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        // The listing prunes partitions with the filters on partition columns; the filters are
        // then all applied on top (the physical optimizer pushes them into the Parquet reader).
        let files = self
            .inner
            .scan(state, Some(&read_indices), &unqualified, None)
            .await?;
        let read_schema = files.schema();
        let predicate = match conjunction(unqualified) {
            Some(p) => {
                Some(state.create_physical_expr(p, &DFSchema::try_from(read_schema.clone())?)?)
            }
            None => None,
        };
        let filtered = |plan: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
            Ok(match &predicate {
                Some(p) => Arc::new(FilterExec::try_new(Arc::clone(p), plan)?),
                None => plan,
            })
        };
        let output: Vec<usize> = wanted
            .iter()
            .map(|n| read_schema.index_of(n))
            .collect::<Result<_, _>>()?;
        let (plain, raw) = self.split_duplicate_free(state, files).await?;
        let mut parts: Vec<Arc<dyn ExecutionPlan>> = Vec::with_capacity(2);
        if let Some(plan) = plain {
            // Compaction or the writer's replay filter left no duplicate in these partitions.
            let columns: Vec<ProjectionExpr> = output
                .iter()
                .map(|&i| {
                    let name = read_schema.field(i).name().clone();
                    ProjectionExpr::new(Arc::new(PhysicalColumn::new(&name, i)), name)
                })
                .collect();
            parts.push(Arc::new(ProjectionExec::try_new(columns, filtered(plan)?)?));
        }
        if let Some(plan) = raw {
            let key: Vec<Arc<dyn PhysicalExpr>> = self
                .table
                .key_columns()
                .iter()
                .map(|&k| datafusion::physical_expr::expressions::col(k, &read_schema))
                .collect::<Result<_>>()?;
            parts.push(Arc::new(DedupExec::try_new(filtered(plan)?, key, output)?));
        }
        UnionExec::try_new(parts)
    }
}

type Plan = Arc<dyn ExecutionPlan>;

impl DedupTable {
    /// Splits a listing scan into the files of duplicate-free partitions and the others (to
    /// de-duplicate). Either may be absent. A partition is duplicate-free when its files are
    /// the outputs of one compaction, or when each of them carries the writer's duplicate-free
    /// mark ([`Marks`]) and no batch is in two of them (a writer joins its files of a
    /// partition, and deletes them once the join is stored). Compaction outputs are not marked: beside other files they may be an
    /// interrupted compaction, whose inputs are still there. A plan that is not a file scan
    /// (an empty table) counts as not duplicate-free.
    async fn split_duplicate_free(
        &self,
        state: &dyn Session,
        files: Plan,
    ) -> Result<(Option<Plan>, Option<Plan>)> {
        let Some(config) = files
            .downcast_ref::<DataSourceExec>()
            .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        else {
            return Ok((None, Some(files)));
        };
        // The listing keeps or prunes whole partitions, so the files here are all of each
        // partition's files.
        let mut partitions: HashMap<&str, Vec<&PartitionedFile>> = HashMap::new();
        for file in config.file_groups.iter().flat_map(FileGroup::iter) {
            partitions.entry(dir_of(file)).or_default().push(file);
        }
        let mut free: HashSet<&str> = HashSet::new();
        let mut to_read: Vec<&PartitionedFile> = Vec::new();
        for (&dir, files) in &partitions {
            if firehose_core::layout::is_compacted_partition(files.iter().map(|f| name_of(f))) {
                free.insert(dir);
            } else {
                to_read.extend(files.iter().copied());
            }
        }
        if !to_read.is_empty() {
            let store = state.runtime_env().object_store(&config.object_store_url)?;
            let marks = self.marks.of(&store, &to_read).await?;
            let mut read: HashMap<&str, Vec<&Mark>> = HashMap::new();
            for (file, mark) in to_read.iter().zip(&marks) {
                read.entry(dir_of(file)).or_default().push(mark);
            }
            // Every file marked, and no batch in two of them (a writer's join cut off before
            // it deleted its inputs).
            free.extend(read.into_iter().filter_map(|(dir, marks)| {
                (marks.iter().all(|m| m.marked)
                    && !origins_overlap(marks.iter().map(|m| &*m.origins)))
                .then_some(dir)
            }));
        }
        if free.is_empty() {
            return Ok((None, Some(files)));
        }
        if free.len() == partitions.len() {
            return Ok((Some(files), None));
        }
        let is_free = |file: &PartitionedFile| free.contains(dir_of(file));
        let subset = |keep: bool| -> Result<Arc<dyn ExecutionPlan>> {
            let groups: Vec<FileGroup> = config
                .file_groups
                .iter()
                .map(|g| FileGroup::new(g.iter().filter(|f| is_free(f) == keep).cloned().collect()))
                .filter(|g| !g.is_empty())
                .collect();
            let builder = FileScanConfigBuilder::from(config.clone());
            let unknown = Statistics::new_unknown(builder.table_schema());
            let subset = builder
                .with_file_groups(groups)
                .with_statistics(unknown)
                .with_output_partitioning(None)
                .build();
            Ok(DataSourceExec::from_data_source(subset))
        };
        Ok((Some(subset(true)?), Some(subset(false)?)))
    }
}

/// The directory (partition) of a listed file.
fn dir_of(file: &PartitionedFile) -> &str {
    let path = file.object_meta.location.as_ref();
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The name of a listed file, without its directory.
fn name_of(file: &PartitionedFile) -> &str {
    let path = file.object_meta.location.as_ref();
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

/// Drops rows whose key an earlier row had. The partitions of the input share one set of
/// keys seen (sharded, each shard behind its own lock), so the input is not repartitioned by
/// key: each partition reads its files and decides row by row.
#[derive(Debug)]
pub(crate) struct DedupExec {
    input: Arc<dyn ExecutionPlan>,
    key: Vec<Arc<dyn PhysicalExpr>>,
    /// The input columns passed on, in order.
    output: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// The keys seen in this execution (a new plan node, as `reset_state` makes, starts empty).
    seen: Arc<SeenKeys>,
}

impl DedupExec {
    fn try_new(
        input: Arc<dyn ExecutionPlan>,
        key: Vec<Arc<dyn PhysicalExpr>>,
        output: Vec<usize>,
    ) -> Result<Self> {
        let schema = Arc::new(input.schema().project(&output)?);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(DedupExec {
            input,
            key,
            output,
            schema,
            properties: Arc::new(properties),
            seen: Arc::new(SeenKeys::new()),
        })
    }
}

impl DisplayAs for DedupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key: Vec<String> = self.key.iter().map(|k| k.to_string()).collect();
        write!(f, "DedupExec: key=[{}]", key.join(", "))
    }
}

impl ExecutionPlan for DedupExec {
    fn name(&self) -> &str {
        "DedupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for k in &self.key {
            if f(k)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("DedupExec needs one input".into()))?;
        Ok(Arc::new(DedupExec::try_new(
            input,
            self.key.clone(),
            self.output.clone(),
        )?))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(DedupExec::try_new(
            Arc::clone(&self.input),
            self.key.clone(),
            self.output.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let reservation =
            MemoryConsumer::new(format!("DedupExec[{partition}]")).register(context.memory_pool());
        let mut seen = Seen::new(
            Arc::clone(&self.seen),
            &self.key,
            &self.input.schema(),
            reservation,
        )?;
        let key = self.key.clone();
        let output = self.output.clone();
        let stream = input
            .map(move |batch| {
                let batch = batch?;
                let keep = seen.first_deliveries(&batch, &key)?;
                let kept = filter_record_batch(&batch, &keep)?;
                Ok(kept.project(&output)?)
            })
            .filter(|b: &Result<RecordBatch>| {
                futures::future::ready(b.as_ref().map_or(true, |b| b.num_rows() > 0))
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// A 128-bit key hash is already uniform: the set uses its low bits as they are.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type HashSet128 = HashSet<u128, BuildHasherDefault<PassThrough>>;

/// Shards of the key set; a key's shard comes from the top bits of its hash, its slot from
/// the low bits.
pub(crate) const SHARDS: usize = 64;

/// The rows of `hashes` grouped by shard (a counting sort that keeps their order within a
/// shard): shard `s` holds `order[start[s]..start[s + 1]]`. A key's shard comes from the top
/// bits of its hash, so the low bits stay uniform within a shard.
pub(crate) fn by_shard(hashes: &[u128]) -> ([usize; SHARDS + 1], Vec<usize>) {
    let shard = |h: u128| (h >> 122) as usize % SHARDS;
    let mut start = [0usize; SHARDS + 1];
    for &h in hashes {
        start[shard(h) + 1] += 1;
    }
    for s in 0..SHARDS {
        start[s + 1] += start[s];
    }
    let mut next = start;
    let mut order = vec![0usize; hashes.len()];
    for (i, &h) in hashes.iter().enumerate() {
        let s = shard(h);
        order[next[s]] = i;
        next[s] += 1;
    }
    (start, order)
}

/// The keys one execution has passed, as 128-bit XXH3 hashes of their row encoding (with a
/// random seed per execution: two different keys share a hash with probability about 2^-128
/// per pair, and nobody can aim at it).
struct SeenKeys {
    seed: u64,
    shards: Vec<Mutex<HashSet128>>,
}

impl fmt::Debug for SeenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeenKeys").finish_non_exhaustive()
    }
}

impl SeenKeys {
    fn new() -> Self {
        SeenKeys {
            seed: std::hash::RandomState::new().hash_one(0u8),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashSet128::default()))
                .collect(),
        }
    }
}

/// One partition's side of the key set: its row encoder and its memory reservation (the
/// growth of the shared set it causes counts against the query's limit).
struct Seen {
    keys: Arc<SeenKeys>,
    converter: RowConverter,
    reservation: MemoryReservation,
}

impl Seen {
    fn new(
        keys: Arc<SeenKeys>,
        key: &[Arc<dyn PhysicalExpr>],
        schema: &SchemaRef,
        reservation: MemoryReservation,
    ) -> Result<Self> {
        let fields = key
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(schema)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Seen {
            keys,
            converter: RowConverter::new(fields)?,
            reservation,
        })
    }

    /// True for the rows of `batch` whose key was not seen before (by any partition).
    fn first_deliveries(
        &mut self,
        batch: &RecordBatch,
        key: &[Arc<dyn PhysicalExpr>],
    ) -> Result<BooleanArray> {
        let n = batch.num_rows();
        let columns = key
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(n))
            .collect::<Result<Vec<_>>>()?;
        let rows = self.converter.convert_columns(&columns)?;
        let seed = self.keys.seed;
        let hashes: Vec<u128> = rows
            .iter()
            .map(|row| xxhash_rust::xxh3::xxh3_128_with_seed(row.as_ref(), seed))
            .collect();
        // Rows by shard, in batch order within a shard: the first of two rows with one key in
        // a batch is the one kept.
        let (start, order) = by_shard(&hashes);
        let mut keep = vec![false; n];
        let mut grown = 0usize;
        for s in 0..SHARDS {
            let rows = &order[start[s]..start[s + 1]];
            if rows.is_empty() {
                continue;
            }
            let mut set = self.keys.shards[s].lock().map_err(|_| {
                DataFusionError::Internal("a de-duplication lock was poisoned".into())
            })?;
            let before = set.capacity();
            set.reserve(rows.len());
            for &i in rows {
                keep[i] = set.insert(hashes[i]);
            }
            grown += set.capacity().saturating_sub(before);
        }
        // A slot holds the hash and a control byte.
        self.reservation.try_grow(grown * (size_of::<u128>() + 1))?;
        Ok(BooleanArray::from(keep))
    }
}
