//! Opening a dataset and running queries on it.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{TableProvider, ViewTable};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, col};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use firehose_core::{ENVELOPE_COLUMNS, Table};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use url::Url;

use crate::dedup::DedupTable;
use crate::s3::{S3Options, split_s3_url};
use crate::{EVENTS_VIEW, Error, PARTITION_COLUMNS, Result, check_read_only};

/// Limits and switches for queries.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    /// Wall-clock limit of one query; it is cancelled past it.
    pub timeout: Duration,
    /// Memory DataFusion's operators may hold at once (sorts and aggregations spill or fail
    /// past it).
    pub memory_limit: usize,
    /// Most rows a query may return (a query that would return more fails; add a `LIMIT`).
    pub max_rows: usize,
    /// Remove duplicate events by event key (see the crate docs). Turn off only for datasets
    /// known to hold no duplicates.
    pub dedup: bool,
    /// Threads (partitions) per query; `None` for one per core.
    pub target_partitions: Option<usize>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            timeout: Duration::from_secs(30),
            memory_limit: 2 << 30,
            max_rows: 1_000_000,
            dedup: true,
            target_partitions: None,
        }
    }
}

/// The result of a query: its schema and its batches.
#[derive(Debug, Clone)]
pub struct Rows {
    /// The columns.
    pub schema: SchemaRef,
    /// The rows, in batches.
    pub batches: Vec<RecordBatch>,
}

impl Rows {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A firehose dataset opened for queries. Cloning is cheap and shares the session (and its
/// memory pool).
#[derive(Clone)]
pub struct Dataset {
    ctx: SessionContext,
    options: QueryOptions,
    executor: Arc<Executor>,
}

/// The runtime queries run on, apart from the caller's: DataFusion operators that produce many
/// batches from one input batch (joins) can keep a worker busy without yielding, and the
/// caller's timer (the time limit) and network tasks must not wait for them.
struct Executor(Option<tokio::runtime::Runtime>);

impl Executor {
    fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("firehose-query")
            // DataFusion plans, optimizes, evaluates and drops expression trees recursively:
            // 16 MiB (reserved, used only as deep as a query goes) holds the deepest tree the
            // SQL guard lets through (`firehose_sql_guard::MAX_NESTING`) with room to spare,
            // even in a debug build; the default 2 MiB did not.
            .thread_stack_size(16 << 20)
            .enable_all()
            .build()?;
        Ok(Executor(Some(runtime)))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Dropping a runtime from async code would block; let its threads wind down instead.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("session", &self.ctx.session_id())
            .field("options", &self.options)
            .finish()
    }
}

impl Dataset {
    /// Opens the dataset at a local directory or at `s3://bucket/prefix`, with the S3 endpoint,
    /// region and credentials from the standard environment ([`S3Options::from_env`]).
    pub async fn open(location: &str, options: QueryOptions) -> Result<Dataset> {
        if location.starts_with("s3://") {
            Self::open_s3(location, &S3Options::from_env(), options).await
        } else {
            Self::open_local(location, options).await
        }
    }

    /// Opens the dataset in a local directory (which need not exist yet: every table is then
    /// empty).
    pub async fn open_local(
        path: impl AsRef<std::path::Path>,
        options: QueryOptions,
    ) -> Result<Dataset> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let absolute = std::path::absolute(path).map_err(|e| Error::Open {
            location: shown.clone(),
            reason: e.to_string(),
        })?;
        let url = Url::from_directory_path(&absolute).map_err(|()| Error::Open {
            location: shown.clone(),
            reason: "not an absolute path".into(),
        })?;
        Self::open_with_store(url.as_str(), Arc::new(LocalFileSystem::new()), options).await
    }

    /// Opens the dataset at `s3://bucket/prefix` with explicit S3 settings.
    pub async fn open_s3(location: &str, s3: &S3Options, options: QueryOptions) -> Result<Dataset> {
        let (bucket, prefix) = split_s3_url(location)?;
        let store = s3.build(&bucket, location)?;
        let url = if prefix.is_empty() {
            format!("s3://{bucket}/")
        } else {
            format!("s3://{bucket}/{prefix}/")
        };
        Self::open_with_store(&url, store, options).await
    }

    /// Opens the dataset at `root` (a URL such as `file:///data/` or `s3://bucket/prefix/`)
    /// read through `store`, which serves that URL's scheme and host (e.g. a wrapper that
    /// counts requests, or an in-memory store in tests).
    pub async fn open_with_store(
        root: &str,
        store: Arc<dyn ObjectStore>,
        options: QueryOptions,
    ) -> Result<Dataset> {
        let open_error = |reason: String| Error::Open {
            location: root.to_owned(),
            reason,
        };
        let mut root_url = Url::parse(root).map_err(|e| open_error(e.to_string()))?;
        if !root_url.path().ends_with('/') {
            let path = format!("{}/", root_url.path());
            root_url.set_path(&path);
        }
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            // Decode the filter columns first and the rest only for matching rows: typed calls
            // filter on one account or a few words.
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true);
        if let Some(n) = options.target_partitions {
            config = config.with_target_partitions(n.max(1));
        }
        // No spilling to disk: a query that needs more memory than the limit fails with a clear
        // error instead of filling the disk of a small host.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(options.memory_limit, 1.0)
            // DataFusion caches a table's file listing forever by default: a long-lived dataset
            // (`firehose serve`) would never see new files, and would fail on the files
            // compaction deletes. List on every query (one listing per table, pruned to the
            // partitions in range); Parquet footers stay cached, keyed by path, size and time.
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(|e| open_error(e.to_string()))?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        let store_url = Url::parse(&format!(
            "{}://{}",
            root_url.scheme(),
            root_url.host_str().unwrap_or_default()
        ))
        .map_err(|e| open_error(e.to_string()))?;
        ctx.register_object_store(&store_url, store);

        let mut tables: Vec<(Table, Arc<dyn TableProvider>)> = Vec::new();
        for table in Table::ALL {
            let url = root_url
                .join(&format!("{}/", table.name()))
                .map_err(|e| open_error(e.to_string()))?;
            let listing_url =
                ListingTableUrl::parse(url.as_str()).map_err(|e| open_error(e.to_string()))?;
            let listing = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(
                    PARTITION_COLUMNS
                        .iter()
                        .map(|&c| (c.to_owned(), DataType::Utf8))
                        .collect(),
                );
            let listing_config = ListingTableConfig::new(listing_url)
                .with_listing_options(listing)
                .with_schema(firehose_core::schema(table));
            let files: Arc<dyn TableProvider> = Arc::new(
                ListingTable::try_new(listing_config).map_err(|e| open_error(e.to_string()))?,
            );
            let provider: Arc<dyn TableProvider> = if options.dedup {
                Arc::new(DedupTable::new(table, files))
            } else {
                files
            };
            ctx.register_table(table.name(), Arc::clone(&provider))
                .map_err(|e| open_error(e.to_string()))?;
            tables.push((table, provider));
        }
        let events = events_view(&ctx, &tables).map_err(|e| open_error(e.to_string()))?;
        ctx.register_table(EVENTS_VIEW, Arc::new(ViewTable::new(events, None)))
            .map_err(|e| open_error(e.to_string()))?;
        let threads = options
            .target_partitions
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
        let executor = Executor::new(threads).map_err(|e| open_error(e.to_string()))?;
        Ok(Dataset {
            ctx,
            options,
            executor: Arc::new(executor),
        })
    }

    /// The DataFusion context, with every table registered (for embedding: further tables,
    /// functions, or DataFrame queries that bypass the read-only check).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The options the dataset was opened with.
    pub fn options(&self) -> &QueryOptions {
        &self.options
    }

    /// Runs one read-only SQL statement (`SELECT`, `WITH ... SELECT`, `EXPLAIN`); anything
    /// else is refused ([`Error::Refused`]) before it is planned.
    pub async fn sql(&self, sql: &str) -> Result<Rows> {
        let statement = check_read_only(sql)?;
        let state = self.ctx.state();
        // Planned on the query runtime, whose threads have the stack deep expressions need
        // (the caller's may not), like the rest of the query.
        let Some(executor) = self.executor.handle() else {
            return Err(Error::Execution(DataFusionError::Internal(
                "the query runtime is gone".into(),
            )));
        };
        let planning = state.clone();
        let plan = executor
            .spawn(async move { planning.statement_to_plan(statement).await })
            .await
            .map_err(|join| Error::Execution(DataFusionError::External(Box::new(join))))?
            .map_err(Error::from_planning)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| Error::refused(e.to_string()))?;
        // EXPLAIN must stay the root of its plan: no row cap on it (it returns a few rows).
        let explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        let df = DataFrame::new(state, plan);
        self.run(df, !explain).await
    }

    /// Runs a DataFrame under the limits: time, memory (the session's pool) and rows.
    pub(crate) async fn collect(&self, df: DataFrame) -> Result<Rows> {
        self.run(df, true).await
    }

    async fn run(&self, df: DataFrame, cap_rows: bool) -> Result<Rows> {
        let max = self.options.max_rows;
        let limited = if cap_rows {
            df.limit(0, Some(max.saturating_add(1)))
                .map_err(Error::from_planning)?
        } else {
            df
        };
        let schema = Arc::clone(limited.schema().inner());
        let batches = self.execute(limited.collect()).await?;
        self.capped(Rows { schema, batches })
    }

    /// `rows`, or an error if there are more than the options allow.
    pub(crate) fn capped(&self, rows: Rows) -> Result<Rows> {
        if rows.num_rows() > self.options.max_rows {
            return Err(Error::TooManyRows {
                limit: self.options.max_rows,
            });
        }
        Ok(rows)
    }

    /// Runs `work` (a query's execution) on the query runtime under the time limit; its memory
    /// counts against the session's pool.
    pub(crate) async fn execute<T: Send + 'static>(
        &self,
        work: impl Future<Output = datafusion::error::Result<T>> + Send + 'static,
    ) -> Result<T> {
        let limit = self.options.timeout;
        // The query runs as a task of its own, so the caller gets the timeout on time even
        // while the query is busy; aborting the task cancels the query at its next yield.
        let Some(executor) = self.executor.handle() else {
            return Err(Error::Execution(DataFusionError::Internal(
                "the query runtime is gone".into(),
            )));
        };
        let mut task = executor.spawn(work);
        match tokio::time::timeout(limit, &mut task).await {
            Err(_) => {
                task.abort();
                Err(Error::Timeout { limit })
            }
            Ok(Err(join)) => Err(Error::Execution(DataFusionError::External(Box::new(join)))),
            Ok(Ok(result)) => {
                result.map_err(|e| Error::from_execution(e, self.options.memory_limit))
            }
        }
    }

    /// A DataFrame over a table (de-duplicated unless turned off).
    pub(crate) async fn table(&self, name: &str) -> Result<DataFrame> {
        self.ctx.table(name).await.map_err(Error::Execution)
    }
}

/// `events`: every table's envelope and partition columns, one after the other.
fn events_view(
    ctx: &SessionContext,
    tables: &[(Table, Arc<dyn TableProvider>)],
) -> datafusion::error::Result<LogicalPlan> {
    let columns: Vec<_> = ENVELOPE_COLUMNS
        .iter()
        .chain(PARTITION_COLUMNS.iter())
        .map(|&c| col(c))
        .collect();
    let _ = ctx;
    let mut plans = tables.iter().map(|(table, provider)| {
        LogicalPlanBuilder::scan(
            table.name(),
            datafusion::datasource::provider_as_source(Arc::clone(provider)),
            None,
        )?
        .project(columns.clone())?
        .build()
    });
    let first = plans
        .next()
        .ok_or_else(|| datafusion::error::DataFusionError::Internal("no tables".into()))??;
    let mut builder = LogicalPlanBuilder::from(first);
    for plan in plans {
        builder = builder.union(plan?)?;
    }
    builder.build()
}
