//! Keeps a firehose dataset in shape as one long-running service.
//!
//! A dataset written live needs three chores: compacting the small files of closed hours
//! (every hour), deleting the hours past the retention age (every day), and, on object
//! storage, aborting the multipart uploads a killed writer left behind (every day; their
//! parts are billed until then, and Hetzner has no lifecycle rules to do it). Run from cron,
//! a chore that fails does so silently, and one that no longer runs is noticed only when the
//! bucket or the query times have grown. [`Maintenance`] runs them on a [`Schedule`] in one
//! process and reports each job in metrics an alert can watch:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `firehose_maintenance_runs_total` | `task`, `result` (`ok`, `error`) | runs finished |
//! | `firehose_maintenance_last_success_timestamp_seconds` | `task` | Unix time of the last successful run; the service's start until one has succeeded |
//! | `firehose_maintenance_last_duration_seconds` | `task` | how long the last run took, successful or not |
//! | `firehose_maintenance_failing` | `task` | 1 when the last run failed, else 0 |
//! | `firehose_maintenance_interval_seconds` | `task` | the schedule: a run is due this long after the previous one started |
//!
//! Jobs run one at a time (compaction's memory budget is the process's), each first at start,
//! then `every` after its previous run started. A failed run is tried again after
//! [`RETRY_AFTER`] (or its interval, if shorter). Every job is safe to interrupt: compaction
//! stores its outputs before deleting its inputs and finishes on the next run, retention
//! deletes whole expired hours that the next run deletes again if one was left, and an upload
//! abort is idempotent. So a shutdown stops the running job where it is.
//!
//! ```no_run
//! # async fn demo() -> Result<(), firehose_maintain::Error> {
//! use std::time::Duration;
//! use firehose_maintain::{Maintenance, RetainJob, Schedule};
//!
//! let schedule = Schedule {
//!     retain: Some(RetainJob { every: Duration::from_secs(86_400), older_than: Duration::from_secs(90 * 86_400) }),
//!     ..Schedule::default()
//! };
//! let maintenance = Maintenance::open("s3://my-archive/v1", schedule).await?;
//! // Until the process ends; give a shutdown signal's future to stop it cleanly.
//! maintenance.run(std::future::pending()).await;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firehose_sink::{CompactOptions, Progress, Storage, compact, retain};
use tokio::time::Instant;
use tracing::{debug, error, info};

/// How soon a failed run is tried again (unless its job's interval is shorter).
pub const RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// Which jobs run, and how often. A job left `None` does not run.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// Compaction of the closed hours.
    pub compact: Option<CompactJob>,
    /// Deletion of the hours past an age.
    pub retain: Option<RetainJob>,
    /// Aborting abandoned multipart uploads (S3 datasets only: see [`Maintenance::open`]).
    pub cleanup_uploads: Option<CleanupJob>,
}

/// Compaction: every `every`, the hours that ended more than `grace` ago
/// ([`firehose_sink::compact()`]).
#[derive(Debug, Clone)]
pub struct CompactJob {
    /// How often.
    pub every: Duration,
    /// How long after its end an hour still takes late events (the writer's grace).
    pub grace: Duration,
    /// Output size, threads, memory budget and spill directory.
    pub options: CompactOptions,
}

/// Retention: every `every`, the hour partitions that ended more than `older_than` ago are
/// deleted ([`firehose_sink::retain`]).
#[derive(Debug, Clone, Copy)]
pub struct RetainJob {
    /// How often.
    pub every: Duration,
    /// The age past which an hour is deleted.
    pub older_than: Duration,
}

/// Upload cleanup: every `every`, multipart uploads started more than `older_than` ago and
/// never completed are aborted.
#[derive(Debug, Clone, Copy)]
pub struct CleanupJob {
    /// How often.
    pub every: Duration,
    /// Uploads younger than this may still be in progress and are left alone.
    pub older_than: Duration,
}

/// One of the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Job {
    /// [`CompactJob`].
    Compact,
    /// [`RetainJob`].
    Retain,
    /// [`CleanupJob`].
    CleanupUploads,
}

impl Job {
    /// Its name in logs and in the metrics' `task` label (not `job`, which Prometheus gives the
    /// scrape job).
    pub fn name(self) -> &'static str {
        match self {
            Job::Compact => "compact",
            Job::Retain => "retain",
            Job::CleanupUploads => "cleanup-uploads",
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of maintenance.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The dataset could not be opened.
    #[error("cannot open the dataset {location}: {source}")]
    Open {
        /// The dataset's location.
        location: String,
        /// The cause.
        source: firehose_sink::Error,
    },
    /// A job's interval is zero.
    #[error("the {job} job runs every 0 s: give it a positive interval")]
    ZeroInterval {
        /// The job.
        job: Job,
    },
    /// The job is not in the schedule.
    #[error("the {job} job is not scheduled")]
    NotScheduled {
        /// The job.
        job: Job,
    },
    /// A run failed.
    #[error("{job} in {location}: {source}")]
    Job {
        /// The job.
        job: Job,
        /// The dataset's location.
        location: String,
        /// The cause.
        source: firehose_sink::Error,
    },
}

/// Results of maintenance.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A successful run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The job.
    pub job: Job,
    /// What it did, in one sentence for the log.
    pub summary: String,
}

/// The dataset and its schedule; see the [crate docs](crate).
pub struct Maintenance {
    location: String,
    storage: Arc<dyn Storage>,
    #[cfg(feature = "s3")]
    s3: Option<Arc<firehose_sink::s3::S3Storage>>,
    schedule: Schedule,
}

impl fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maintenance")
            .field("location", &self.location)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl Maintenance {
    /// The dataset at `location` (a local directory, or `s3://bucket/prefix` with the standard
    /// AWS environment, as [`firehose_sink::open`]) and its schedule. A local directory has no
    /// multipart uploads: the cleanup job is dropped from its schedule (with a log line).
    pub async fn open(location: &str, mut schedule: Schedule) -> Result<Self> {
        let jobs = [
            (Job::Compact, schedule.compact.as_ref().map(|j| j.every)),
            (Job::Retain, schedule.retain.map(|j| j.every)),
            (
                Job::CleanupUploads,
                schedule.cleanup_uploads.map(|j| j.every),
            ),
        ];
        if let Some((job, _)) = jobs
            .iter()
            .find(|(_, every)| *every == Some(Duration::ZERO))
        {
            return Err(Error::ZeroInterval { job: *job });
        }
        let open_error = |source| Error::Open {
            location: location.to_owned(),
            source,
        };
        let is_local = firehose_core::location::local_path(location).is_some();
        if is_local && schedule.cleanup_uploads.take().is_some() {
            info!(
                location,
                "A local directory has no multipart uploads: the cleanup-uploads job does not run."
            );
        }
        #[cfg(feature = "s3")]
        let s3 = if is_local {
            None
        } else {
            let config = firehose_sink::s3::S3Config::from_url(location).map_err(open_error)?;
            Some(Arc::new(
                firehose_sink::s3::S3Storage::new(config)
                    .await
                    .map_err(open_error)?,
            ))
        };
        #[cfg(feature = "s3")]
        let storage: Arc<dyn Storage> = match &s3 {
            Some(s3) => s3.clone(),
            None => firehose_sink::open(location).await.map_err(open_error)?,
        };
        #[cfg(not(feature = "s3"))]
        let storage = firehose_sink::open(location).await.map_err(open_error)?;
        Ok(Maintenance {
            location: location.to_owned(),
            storage,
            #[cfg(feature = "s3")]
            s3,
            schedule,
        })
    }

    /// The scheduled jobs and their intervals, in the order they first run.
    pub fn jobs(&self) -> Vec<(Job, Duration)> {
        let s = &self.schedule;
        [
            s.cleanup_uploads.map(|j| (Job::CleanupUploads, j.every)),
            s.retain.map(|j| (Job::Retain, j.every)),
            s.compact.as_ref().map(|j| (Job::Compact, j.every)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Runs every scheduled job when due (the first time at once) until `shutdown` completes;
    /// a failed run is logged, counted and tried again later, never the end of the service.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let jobs = self.jobs();
        let started = unix_seconds();
        for (job, every) in &jobs {
            metrics::gauge!("firehose_maintenance_interval_seconds", "task" => job.name())
                .set(every.as_secs_f64());
            metrics::gauge!("firehose_maintenance_last_success_timestamp_seconds", "task" => job.name())
                .set(started);
            metrics::gauge!("firehose_maintenance_failing", "task" => job.name()).set(0.0);
        }
        info!(
            location = %self.location,
            jobs = %jobs.iter().map(|(job, every)| format!("{job} every {} s", every.as_secs())).collect::<Vec<_>>().join(", "),
            "Maintaining the dataset."
        );
        let mut due: Vec<Instant> = jobs.iter().map(|_| Instant::now()).collect();
        tokio::pin!(shutdown);
        loop {
            let Some((next, at)) = due.iter().copied().enumerate().min_by_key(|(_, at)| *at) else {
                // Nothing scheduled: wait for the end.
                shutdown.as_mut().await;
                return;
            };
            tokio::select! {
                () = shutdown.as_mut() => return,
                () = tokio::time::sleep_until(at) => {}
            }
            let (job, every) = jobs[next];
            let began = Instant::now();
            let outcome = tokio::select! {
                () = shutdown.as_mut() => {
                    info!(%job, "Stopping in the middle of a run: the next one finishes it.");
                    return;
                }
                outcome = self.run_job(job) => outcome,
            };
            due[next] = began
                + match outcome {
                    Ok(_) => every,
                    Err(_) => every.min(RETRY_AFTER),
                };
        }
    }

    /// Runs `job` once now, and records it in the metrics and the log.
    pub async fn run_job(&self, job: Job) -> Result<Outcome> {
        let began = Instant::now();
        let result = match job {
            Job::Compact => self.compact().await,
            Job::Retain => self.retain().await,
            Job::CleanupUploads => self.cleanup_uploads().await,
        };
        let seconds = began.elapsed().as_secs_f64();
        let name = job.name();
        metrics::gauge!("firehose_maintenance_last_duration_seconds", "task" => name).set(seconds);
        match &result {
            Ok(summary) => {
                metrics::counter!("firehose_maintenance_runs_total", "task" => name, "result" => "ok")
                    .increment(1);
                metrics::gauge!("firehose_maintenance_last_success_timestamp_seconds", "task" => name)
                    .set(unix_seconds());
                metrics::gauge!("firehose_maintenance_failing", "task" => name).set(0.0);
                info!(%job, seconds, "{summary}");
            }
            Err(e) => {
                metrics::counter!("firehose_maintenance_runs_total", "task" => name, "result" => "error")
                    .increment(1);
                metrics::gauge!("firehose_maintenance_failing", "task" => name).set(1.0);
                error!(%job, seconds, error = %e, "A maintenance job failed; it is tried again later.");
            }
        }
        result.map(|summary| Outcome { job, summary })
    }

    fn failed(&self, job: Job) -> impl FnOnce(firehose_sink::Error) -> Error + '_ {
        move |source| Error::Job {
            job,
            location: self.location.clone(),
            source,
        }
    }

    async fn compact(&self) -> Result<String> {
        let Some(config) = &self.schedule.compact else {
            return Err(Error::NotScheduled { job: Job::Compact });
        };
        let closed_before_us = firehose_core::units::unix_micros_ago(config.grace);
        let done = compact(
            self.storage.as_ref(),
            closed_before_us,
            &config.options,
            |progress| {
                if let Progress::Finished(_) | Progress::Started { .. } = progress {
                    debug!("{progress}");
                }
            },
        )
        .await
        .map_err(self.failed(Job::Compact))?;
        Ok(format!(
            "Compacted {} partitions: {} files into {}, {} duplicates removed, {} bytes into {}; {} already compacted, {} still open.",
            done.partitions,
            done.files_in,
            done.files_out,
            done.duplicates,
            done.bytes_in,
            done.bytes_out,
            done.already_compact,
            done.open
        ))
    }

    async fn retain(&self) -> Result<String> {
        let Some(config) = self.schedule.retain else {
            return Err(Error::NotScheduled { job: Job::Retain });
        };
        let cutoff_us = firehose_core::units::unix_micros_ago(config.older_than);
        let done = retain(self.storage.as_ref(), cutoff_us, false, |_| {})
            .await
            .map_err(self.failed(Job::Retain))?;
        Ok(format!(
            "Deleted {} files ({} bytes) in {} hour partitions older than {} s; kept {} files.",
            done.files,
            done.bytes,
            done.partitions,
            config.older_than.as_secs(),
            done.kept
        ))
    }

    async fn cleanup_uploads(&self) -> Result<String> {
        let Some(config) = self.schedule.cleanup_uploads else {
            return Err(Error::NotScheduled {
                job: Job::CleanupUploads,
            });
        };
        #[cfg(feature = "s3")]
        if let Some(s3) = &self.s3 {
            let stale = s3
                .stale_uploads(config.older_than)
                .await
                .map_err(self.failed(Job::CleanupUploads))?;
            for upload in &stale {
                s3.abort_upload(upload)
                    .await
                    .map_err(self.failed(Job::CleanupUploads))?;
            }
            return Ok(format!(
                "Aborted {} multipart uploads started more than {} s ago.",
                stale.len(),
                config.older_than.as_secs()
            ));
        }
        // `open` drops the job for a local dataset; without S3 support nothing else opens.
        let _ = config;
        Err(Error::NotScheduled {
            job: Job::CleanupUploads,
        })
    }
}

/// Describes the metrics for the Prometheus exporter (call once, after installing it).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "firehose_maintenance_runs_total",
        "Maintenance runs finished, by job and result (ok, error)."
    );
    metrics::describe_gauge!(
        "firehose_maintenance_last_success_timestamp_seconds",
        metrics::Unit::Seconds,
        "Unix time of the job's last successful run; the service's start until one has succeeded."
    );
    metrics::describe_gauge!(
        "firehose_maintenance_last_duration_seconds",
        metrics::Unit::Seconds,
        "How long the job's last run took, successful or not."
    );
    metrics::describe_gauge!(
        "firehose_maintenance_failing",
        "1 when the job's last run failed, else 0."
    );
    metrics::describe_gauge!(
        "firehose_maintenance_interval_seconds",
        metrics::Unit::Seconds,
        "The job's schedule: a run is due this long after the previous one started."
    );
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
