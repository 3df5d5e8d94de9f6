//! A table provider that removes duplicate events by event key.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::min;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableProviderFilterPushDown, col};
use datafusion::physical_plan::ExecutionPlan;
use firehose_core::Table;

use crate::PARTITION_COLUMNS;

/// Wraps a table's file listing and keeps one row per event key.
///
/// Filters are pushed into the wrapped scan (partition pruning, Parquet statistics and row
/// filters all still apply) and evaluated before the de-duplication, which is correct because
/// every delivery of an event carries the same record. The de-duplication is a hash
/// aggregation grouped by the key and the other columns the query reads; `time_us` and the
/// partition columns of a commit are not part of its key (a replay from another Jetstream host
/// has another `time_us`) and take their smallest value.
pub(crate) struct DedupTable {
    table: Table,
    inner: Arc<dyn TableProvider>,
    /// The inner schema, with the aggregated columns nullable (as `min` makes them).
    schema: SchemaRef,
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
        let inner_schema = inner.schema();
        let fields: Vec<Field> = inner_schema
            .fields()
            .iter()
            .map(|f| {
                let varies = Self::varies(table, f.name());
                f.as_ref().clone().with_nullable(f.is_nullable() || varies)
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            inner_schema.metadata().clone(),
        ));
        DedupTable {
            table,
            inner,
            schema,
        }
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

    /// Columns that can differ between two deliveries of one event: aggregated, not grouped.
    fn varies(table: Table, name: &str) -> bool {
        !Self::key(table).contains(&name)
            && (name == "time_us" || PARTITION_COLUMNS.contains(&name))
    }
}

#[async_trait]
impl TableProvider for DedupTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
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
        let mut group: Vec<Expr> = Self::key(self.table).iter().map(|&k| col(k)).collect();
        let mut aggregates = Vec::new();
        for name in &wanted {
            if Self::key(self.table).contains(&name.as_str()) {
                continue;
            }
            if Self::varies(self.table, name) {
                aggregates.push(min(col(name.as_str())).alias(name.as_str()));
            } else {
                group.push(col(name.as_str()));
            }
        }
        let plan = plan
            .aggregate(group, aggregates)?
            .project(wanted.iter().map(|n| col(n.as_str())))?
            .build()?;
        state.create_physical_plan(&plan).await
    }
}
