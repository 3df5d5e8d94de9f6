//! A table provider that removes duplicate events by event key.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use firehose_core::Table;
use futures::StreamExt;

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
        DedupTable { table, inner }
    }

    /// The columns that identify an event in this table.
    pub(crate) fn key(table: Table) -> &'static [&'static str] {
        match table {
            Table::Identity | Table::Account => &["did", "time_us"],
            // Other collections share one table: the collection is part of the key.
            Table::Records => &["did", "collection", "rkey", "rev"],
            // A collection's own table holds only that collection.
            _ => &["did", "rkey", "rev"],
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
        // Read the wanted columns, the key and what the filters need.
        let mut read: BTreeSet<String> = wanted.iter().cloned().collect();
        read.extend(Self::key(self.table).iter().map(|&k| k.to_owned()));
        for f in filters {
            f.apply(|e| {
                if let Expr::Column(c) = e {
                    read.insert(c.name.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        let read_indices: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| read.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        let mut plan = LogicalPlanBuilder::scan_with_filters(
            self.table.name(),
            provider_as_source(Arc::clone(&self.inner)),
            Some(read_indices),
            filters.to_vec(),
        )?;
        if let Some(predicate) = conjunction(filters.iter().cloned()) {
            plan = plan.filter(predicate)?;
        }
        let files = state.create_physical_plan(&plan.build()?).await?;
        let input_schema = files.schema();
        let key: Vec<Arc<dyn PhysicalExpr>> = Self::key(self.table)
            .iter()
            .map(|&k| datafusion::physical_expr::expressions::col(k, &input_schema))
            .collect::<Result<_>>()?;
        let output: Vec<usize> = wanted
            .iter()
            .map(|n| input_schema.index_of(n))
            .collect::<Result<_, _>>()?;
        let partitions = state.config().target_partitions().max(1);
        let input: Arc<dyn ExecutionPlan> = if partitions > 1 {
            Arc::new(RepartitionExec::try_new(
                files,
                Partitioning::Hash(key.clone(), partitions),
            )?)
        } else {
            files
        };
        Ok(Arc::new(DedupExec::try_new(input, key, output)?))
    }
}

/// Drops rows whose key an earlier row of the same partition had. The input must be
/// partitioned by the key (or be one partition).
#[derive(Debug)]
pub(crate) struct DedupExec {
    input: Arc<dyn ExecutionPlan>,
    key: Vec<Arc<dyn PhysicalExpr>>,
    /// The input columns passed on, in order.
    output: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
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

    fn required_input_distribution(&self) -> Vec<Distribution> {
        if self.input.output_partitioning().partition_count() > 1 {
            vec![Distribution::KeyPartitioned(self.key.clone())]
        } else {
            vec![Distribution::SinglePartition]
        }
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
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

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let reservation =
            MemoryConsumer::new(format!("DedupExec[{partition}]")).register(context.memory_pool());
        let mut seen = Seen::new(&self.key, &self.input.schema(), reservation)?;
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
struct PassThrough(u64);

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

/// The keys a partition has passed, as 128-bit XXH3 hashes of their row encoding (with a
/// random seed per query: two different keys share a hash with probability about 2^-128 per
/// pair, and nobody can aim at it). Its memory counts against the query's limit.
struct Seen {
    converter: RowConverter,
    hashes: HashSet<u128, BuildHasherDefault<PassThrough>>,
    seed: u64,
    reservation: MemoryReservation,
}

impl Seen {
    fn new(
        key: &[Arc<dyn PhysicalExpr>],
        schema: &SchemaRef,
        reservation: MemoryReservation,
    ) -> Result<Self> {
        let fields = key
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(schema)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Seen {
            converter: RowConverter::new(fields)?,
            hashes: HashSet::default(),
            seed: std::hash::RandomState::new().hash_one(0u8),
            reservation,
        })
    }

    /// True for the rows of `batch` whose key this partition has not seen before.
    fn first_deliveries(
        &mut self,
        batch: &RecordBatch,
        key: &[Arc<dyn PhysicalExpr>],
    ) -> Result<BooleanArray> {
        let columns = key
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<_>>>()?;
        let rows = self.converter.convert_columns(&columns)?;
        let before = self.hashes.capacity();
        self.hashes.reserve(batch.num_rows());
        let keep: BooleanArray = rows
            .iter()
            .map(|row| {
                let h = xxhash_rust::xxh3::xxh3_128_with_seed(row.as_ref(), self.seed);
                Some(self.hashes.insert(h))
            })
            .collect();
        let grown = self.hashes.capacity().saturating_sub(before);
        // A slot holds the hash and a control byte.
        self.reservation.try_grow(grown * (size_of::<u128>() + 1))?;
        Ok(keep)
    }
}
