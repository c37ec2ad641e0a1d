//! `comet store inspect` and `comet store verify`: admin views of a stopped broker's store.
//!
//! Both open the store through [`MessageStore::open`], which runs crash recovery exactly as a
//! broker start does, and close it cleanly afterwards. Neither creates a store: a missing data
//! directory, or one without a `commitlog/`, is an error. Retention is disabled while they hold
//! the store, so an admin command never deletes segments, however old.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use comet_store::{MessageStore, RecoveryReport, StoreConfig, StoreError};
use serde::Serialize;

use crate::args::{StoreArgs, StoreCommand};

/// Messages read per `get_messages` call while verifying.
const VERIFY_BATCH: usize = 64;

/// Runs one `comet store` subcommand, printing its JSON result on stdout.
///
/// # Errors
/// The store cannot be opened, read or closed, or stdout cannot be written.
pub fn run(cmd: &StoreCommand) -> Result<ExitCode> {
    match cmd {
        StoreCommand::Inspect(args) => {
            let report = inspect(args)?;
            print_json(&report)?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Verify(args) => {
            let report = verify(args)?;
            print_json(&report)?;
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// What `comet store inspect` prints.
#[derive(Debug, Serialize)]
struct InspectReport {
    data_dir: String,
    segment_size: u64,
    recovery: RecoveryJson,
    min_offset: i64,
    write_offset: i64,
    flushed_offset: i64,
    dispatched_offset: i64,
    segments: Vec<i64>,
    queues: Vec<QueueJson>,
}

#[derive(Debug, Serialize)]
struct RecoveryJson {
    had_checkpoint: bool,
    scanned_from: i64,
    valid_end: i64,
    records_verified: u64,
    truncated: bool,
    redispatched: u64,
    scan_duration_ms: u64,
    redispatch_duration_ms: u64,
    duration_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<RecoveryReport> for RecoveryJson {
    fn from(r: RecoveryReport) -> Self {
        Self {
            had_checkpoint: r.had_checkpoint,
            scanned_from: r.scanned_from,
            valid_end: r.valid_end,
            records_verified: r.records_verified,
            truncated: r.truncated,
            redispatched: r.redispatched,
            scan_duration_ms: millis(r.scan_duration),
            redispatch_duration_ms: millis(r.redispatch_duration),
            duration_ms: millis(r.duration),
        }
    }
}

#[derive(Debug, Serialize)]
struct QueueJson {
    topic: String,
    queue_id: i32,
    min_offset: i64,
    max_offset: i64,
    backlog: i64,
}

/// What `comet store verify` prints.
#[derive(Debug, Serialize)]
struct VerifyReport {
    data_dir: String,
    recovery: RecoveryJson,
    /// Consume queues scanned.
    queues: usize,
    /// Messages read and verified.
    messages: u64,
    /// Commitlog bytes of the verified records (headers included).
    bytes: u64,
    /// Body bytes of the verified messages.
    body_bytes: u64,
    corrupt: Vec<CorruptJson>,
    ok: bool,
}

#[derive(Debug, Serialize)]
struct CorruptJson {
    topic: String,
    queue_id: i32,
    queue_offset: i64,
    /// Commitlog offset the consume-queue entry points at, when the entry itself is readable.
    physical_offset: Option<i64>,
    error: String,
}

fn inspect(args: &StoreArgs) -> Result<InspectReport> {
    let store = open(args)?;
    let stats = store.stats();
    let report = InspectReport {
        data_dir: args.data_dir.display().to_string(),
        segment_size: args.segment_size.0,
        recovery: store.recovery_report().into(),
        min_offset: stats.min_offset,
        write_offset: stats.write_offset,
        flushed_offset: stats.flushed_offset,
        dispatched_offset: stats.dispatched_offset,
        segments: stats.segments,
        queues: stats
            .queues
            .into_iter()
            .map(|(topic, queue_id, min, max)| QueueJson {
                topic,
                queue_id,
                min_offset: min,
                max_offset: max,
                backlog: max - min,
            })
            .collect(),
    };
    close(store, &args.data_dir)?;
    Ok(report)
}

fn verify(args: &StoreArgs) -> Result<VerifyReport> {
    let store = open(args)?;
    let queues = store.stats().queues;
    let mut report = VerifyReport {
        data_dir: args.data_dir.display().to_string(),
        recovery: store.recovery_report().into(),
        queues: queues.len(),
        messages: 0,
        bytes: 0,
        body_bytes: 0,
        corrupt: Vec::new(),
        ok: true,
    };
    for (topic, queue_id, min, max) in &queues {
        verify_queue(&store, topic, *queue_id, *min, *max, &mut report);
    }
    report.ok = report.corrupt.is_empty();
    close(store, &args.data_dir)?;
    Ok(report)
}

/// Reads `[min, max)` of one queue in batches. A batch that fails is re-read one offset at a
/// time, so every bad record is named and every good one around it still counts.
fn verify_queue(
    store: &MessageStore,
    topic: &str,
    queue_id: i32,
    min: i64,
    max: i64,
    report: &mut VerifyReport,
) {
    let count = |report: &mut VerifyReport, m: &comet_store::StoredMessage| {
        report.messages += 1;
        report.bytes += u64::from(m.size);
        report.body_bytes += m.message.body.len() as u64;
    };
    let mut offset = min;
    while offset < max {
        match store.get_messages(topic, queue_id, offset, VERIFY_BATCH, |_| true) {
            Ok(r) => {
                r.messages.iter().for_each(|m| count(report, m));
                // `next_offset` always advances past what was examined; guard anyway so a
                // queue that stops advancing cannot loop forever.
                offset = r.next_offset.max(offset + 1);
            }
            Err(_) => {
                // The failing record lies within the next VERIFY_BATCH entries: at most
                // VERIFY_BATCH records are read per call.
                let end = (offset + VERIFY_BATCH as i64).min(max);
                for o in offset..end {
                    match store.get_messages(topic, queue_id, o, 1, |e| e.queue_offset == o) {
                        Ok(r) => r.messages.iter().for_each(|m| count(report, m)),
                        Err(e) => {
                            tracing::warn!(topic, queue_id, queue_offset = o, error = %e, "corrupt");
                            let physical_offset = store
                                .read_queue(topic, queue_id, o, 1)
                                .first()
                                .filter(|entry| entry.queue_offset == o)
                                .map(|entry| entry.physical_offset);
                            report.corrupt.push(CorruptJson {
                                topic: topic.to_owned(),
                                queue_id,
                                queue_offset: o,
                                physical_offset,
                                error: e.to_string(),
                            });
                        }
                    }
                }
                offset = end;
            }
        }
    }
}

/// Opens an existing store with the settings an admin command needs.
fn open(args: &StoreArgs) -> Result<MessageStore> {
    let dir = &args.data_dir;
    if !dir.exists() {
        bail!("data directory {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("data directory {} is not a directory", dir.display());
    }
    if !dir.join("commitlog").is_dir() {
        bail!(
            "data directory {} is not a Comet store: it has no commitlog/ directory",
            dir.display()
        );
    }
    let segment_size = usize::try_from(args.segment_size.0).with_context(|| {
        format!(
            "--segment-size {} does not fit in memory",
            args.segment_size
        )
    })?;
    let mut cfg = StoreConfig::new(dir);
    cfg.segment_size = segment_size;
    // Only appends are bounded by it, but validation requires it to fit in a segment.
    cfg.max_record_size = cfg.max_record_size.min(segment_size);
    // Admin commands never delete data, whatever its age or the disk's fill level.
    cfg.retention.file_reserved_time = Duration::MAX;
    cfg.retention.disk_high_watermark = 1.0;
    cfg.retention.disk_refuse_watermark = 1.0;
    cfg.retention.check_interval = Duration::from_secs(365 * 24 * 3600);
    match MessageStore::open(cfg) {
        Ok(store) => Ok(store),
        Err(e @ (StoreError::Layout { .. } | StoreError::Config { .. })) => {
            Err(anyhow::Error::new(e).context(format!(
                "cannot open the store in {} with segment size {} ({} bytes); --segment-size \
                 must be the size the store was created with",
                dir.display(),
                args.segment_size,
                args.segment_size.0
            )))
        }
        Err(e) => {
            Err(anyhow::Error::new(e)
                .context(format!("cannot open the store in {}", dir.display())))
        }
    }
}

fn close(store: MessageStore, dir: &Path) -> Result<()> {
    store
        .close()
        .with_context(|| format!("closing the store in {}", dir.display()))
}

fn print_json(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).context("writing the result to stdout")?;
    writeln!(out).context("writing the result to stdout")?;
    out.flush().context("writing the result to stdout")
}
