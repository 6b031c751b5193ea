//! `retail-ai`: people analytics from store video.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use retail_ai::{Config, FilesRequest, render_table};
use retail_core::{StreamId, TenantId};
use retail_runtime::StartTime;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "retail-ai", version, about = "People analytics from store video: footfall, occupancy, dwell")]
struct Cli {
    /// Log filter (tracing syntax), e.g. `info`, `retail_ai=debug`; also read from RUST_LOG.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,
    /// Serve Prometheus metrics (counters such as `retail_lake_late_events_total`) over HTTP
    /// at this address, e.g. `127.0.0.1:9464`, while the command runs.
    #[arg(long, global = true, env = "RETAIL_AI_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the big variant would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Analyse video files: detect and track people, count line crossings, measure zone
    /// occupancy and dwell. Writes events.jsonl, aggregates/*.parquet and summary.json to --out
    /// (with several files, to one sub-folder per file, named after it; they run at once and
    /// share the inference workers).
    Analyze {
        /// Video files (mp4, mkv, avi, ... whatever GStreamer's decodebin handles).
        #[arg(required = true, value_name = "INPUT")]
        inputs: Vec<PathBuf>,
        /// Analysis config (TOML): lines, zones, detector, tracker. Without it: defaults, no
        /// lines or zones (people are still counted).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output directory; created if missing. Files appear only when the analysis succeeds.
        #[arg(long, short, default_value = "results")]
        out: PathBuf,
        /// Also write the video with boxes, track ids, lines and zones drawn (H.264 MP4, or MKV
        /// by extension).
        #[arg(long, value_name = "VIDEO")]
        annotate: Option<PathBuf>,
        /// Also write every frame's detections (frame, pts, box in pixels, score, track id) as
        /// JSON lines, for audits of count accuracy and model evaluation.
        #[arg(long, value_name = "FILE")]
        detections: Option<PathBuf>,
        /// Tenant the video belongs to (overrides stream.tenant; default `default`).
        #[arg(long)]
        tenant: Option<String>,
        /// Stream id in events and aggregates (overrides stream.id; default: file name stem).
        #[arg(long)]
        stream_id: Option<String>,
        /// Wall-clock time of the first frame, RFC 3339 (overrides stream.start-time).
        #[arg(long, value_name = "TIME")]
        start_time: Option<String>,
        /// Parallel inference sessions (overrides detector.workers; 0 = one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Print the summary as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the lake aggregator: consume events from the bus, write per-minute Parquet
    /// (tenant=…/date=…/), commit offsets after the files are durable.
    Lake {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Stop after this many seconds without new events, having written everything
        /// (batch mode); default: run until killed. In a consumer group it also waits while
        /// records are left that a rebalance may hand it: up to two session timeouts after
        /// the group's backlog last moved, or 16 and 10 s while it holds no partition.
        #[arg(long, value_name = "SECONDS")]
        until_idle: Option<u64>,
    },
    /// Merge each day's per-minute lake files into one file per table, tenant and day, for
    /// days before --before (answers do not change). Pick a day older than the lateness and
    /// the aggregator's lag.
    Compact {
        /// First day NOT compacted, YYYY-MM-DD (today is never compacted).
        #[arg(long)]
        before: String,
        /// Leave a day alone while any of its files is younger than this (seconds).
        #[arg(long, default_value_t = 3600)]
        settle_s: u64,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// SQL over the lake for one tenant: tables events, line_counts, zone_occupancy,
    /// late_events (each with a `date` partition column).
    Query {
        /// One read-only SQL statement.
        sql: String,
        /// The tenant whose data is queried; no other tenant's rows are visible.
        #[arg(long)]
        tenant: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Analyse the config's live cameras ([[cameras]]) until stopped: events go to the bus as
    /// they happen; cameras reconnect by themselves after faults. SIGHUP reloads the config
    /// (cameras added, changed or removed without disturbing the others); SIGTERM or Ctrl-C
    /// finishes every stream and exits. Serves /metrics, /healthz and /readyz at
    /// --metrics-addr (default 127.0.0.1:9464).
    Worker {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Serve the platform's HTTP API (organisations, users, API keys, encrypted uploads;
    /// OpenAPI document at /openapi.json) on the config's [server] settings. With none:
    /// SQLite, a local object store and generated secrets under ./retail-data, listening on
    /// 127.0.0.1:8080.
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Delete every upload, result and record whose retention has expired (serve also does
    /// this every server.purge-interval-s), logging each deletion in the purge log; prints
    /// what went as JSON.
    Purge {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Score an analysis against ground truth: person precision/recall at IoU 0.5, MOTA and
    /// IDF1 (MOT Challenge definitions) on the labelled frames, crossing errors per line and
    /// direction, zone peak errors, distinct-people error. Prints a table; writes
    /// evaluation.json and hyp.txt (the tracks as MOT rows) into RESULTS.
    Evaluate {
        /// Ground truth: gt/gt.txt (MOT Challenge), labelled_frames.txt or seqinfo.ini,
        /// optionally crossings.csv and people.toml (see the README).
        #[arg(long)]
        truth: PathBuf,
        /// The --out of `retail-ai analyze ... --detections RESULTS/detections.jsonl`.
        results: PathBuf,
        /// The analysis config the video was analysed with (for its zones).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The detections file, if not RESULTS/detections.jsonl.
        #[arg(long)]
        detections: Option<PathBuf>,
        /// Where the JSON report goes (default RESULTS/evaluation.json).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Report what this binary finds: GStreamer and its elements, ONNX Runtime, the model.
    Doctor,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        // ONNX Runtime logs every arena allocation at info: quiet unless asked for by name.
        .with_env_filter(EnvFilter::try_new(format!("ort=warn,{}", cli.log)).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    finish(run(cli.command, cli.metrics_addr))
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, always: callers grep logs and CI output for it.
            let text = format!("{e:#}");
            let one_line: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            eprintln!("error: {}", one_line.join(" "));
            ExitCode::FAILURE
        }
    }
}

/// Each camera's summary as a JSON line on stdout; its failure on stderr.
fn report_cameras(
    results: Vec<(String, Result<retail_ai::Summary, retail_ai::RuntimeError>)>,
) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    for (camera, result) in results {
        match result {
            Ok(s) => println!("{}", serde_json::to_string(&s)?),
            Err(e) => {
                failed += 1;
                eprintln!("error: camera {camera}: {e}");
            }
        }
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn run(command: Command, metrics_addr: Option<std::net::SocketAddr>) -> anyhow::Result<ExitCode> {
    if let Command::Serve { config } = &command {
        // The server has its own Tokio runtime; metrics join it later.
        retail_ai::serve::run(config.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Purge { config } = &command {
        retail_ai::serve::purge(config.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Worker { config } = &command {
        // The worker serves metrics itself, beside its health endpoints.
        let addr = metrics_addr.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9464)));
        return report_cameras(retail_ai::worker::run(config, addr)?);
    }
    if let Some(addr) = metrics_addr {
        // Without a Tokio runtime here the exporter runs its own on a background thread.
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| anyhow::anyhow!("cannot serve metrics at {addr}: {e}"))?;
    }
    match command {
        Command::Analyze {
            inputs,
            config,
            out,
            annotate,
            detections,
            tenant,
            stream_id,
            start_time,
            workers,
            json,
            quiet,
        } => {
            let mut cfg = Config::load(config.as_deref())?;
            let bad = |flag: &'static str| move |e: String| anyhow::anyhow!("invalid option {flag}: {e}");
            if let Some(t) = tenant {
                cfg.stream.tenant = Some(TenantId::parse(&t).map_err(bad("--tenant"))?);
            }
            if let Some(id) = stream_id {
                cfg.stream.id = Some(StreamId::parse(&id).map_err(bad("--stream-id"))?);
            }
            if let Some(t) = start_time {
                cfg.stream.start_time = Some(StartTime::parse(&t).map_err(bad("--start-time"))?);
            }
            if let Some(w) = workers {
                cfg.detector.workers = w;
            }
            cfg.validate().map_err(|e| anyhow::anyhow!("invalid option: {e}"))?;
            let stop = stop_on_ctrl_c();
            let req = FilesRequest { inputs, config: cfg, out_dir: Some(out.clone()), annotate, detections, stop };
            let results = retail_ai::analyze::run(&req, !quiet && std::io::stderr().is_terminal())?;
            report(&req, results, &out, json)
        }
        Command::Lake { config, until_idle } => {
            let cfg = Config::load(config.as_deref())?;
            let store = retail_lake::LakeStore::open(&cfg.lake.url, &cfg.lake.s3)?;
            let mut consumer = retail_bus::open_consumer(&cfg.bus, &cfg.lake.group)?;
            let mut dead_letters = retail_bus::open_producer(&cfg.bus)?;
            let stop = match until_idle {
                Some(s) => retail_lake::StopWhen::Idle(std::time::Duration::from_secs(s)),
                None => retail_lake::StopWhen::Never,
            };
            let stats = runtime()?.block_on(retail_lake::run(
                &cfg.lake,
                &cfg.bus,
                consumer.as_mut(),
                dead_letters.as_mut(),
                &store,
                stop,
            ))?;
            println!("{}", serde_json::to_string(&stats)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Evaluate { truth, results, config, detections, json } => {
            let req = retail_ai::evaluate::EvaluateRequest { truth, results, config, detections, json };
            print!("{}", retail_ai::evaluate::run(&req)?.table());
            Ok(ExitCode::SUCCESS)
        }
        Command::Compact { before, settle_s, config } => {
            chrono::NaiveDate::parse_from_str(&before, "%Y-%m-%d")
                .map_err(|e| anyhow::anyhow!("--before {before:?} is not YYYY-MM-DD: {e}"))?;
            let cfg = Config::load(config.as_deref())?;
            let store = retail_lake::LakeStore::open(&cfg.lake.url, &cfg.lake.s3)?;
            let stats =
                runtime()?.block_on(retail_lake::compact(&store, &before, std::time::Duration::from_secs(settle_s)))?;
            println!("{}", serde_json::to_string(&stats)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Query { sql, tenant, config, format } => {
            let cfg = Config::load(config.as_deref())?;
            let store = retail_lake::LakeStore::open(&cfg.lake.url, &cfg.lake.s3)?;
            let limits = cfg.lake.query_limits();
            let batches = runtime()?.block_on(retail_lake::query::query_with_limits(&store, &tenant, &sql, limits))?;
            print!("{}", render(&batches, format)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker { .. } | Command::Serve { .. } | Command::Purge { .. } => Ok(ExitCode::SUCCESS), // returned above
        Command::Doctor => {
            let (ok, report) = retail_ai::doctor::run();
            print!("{report}");
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// A flag set by the first Ctrl-C (SIGINT), so that `analyze` cancels its streams and
/// removes their partial outputs; a second Ctrl-C kills the process as usual.
fn stop_on_ctrl_c() -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().ok()?;
    std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                eprintln!("interrupted: stopping; partial outputs are removed (Ctrl-C again to kill)");
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                // Restore the default: a second Ctrl-C ends the process at once.
                rt.block_on(tokio::signal::ctrl_c()).ok();
                std::process::exit(130);
            }
        })
        .ok()?;
    Some(stop)
}

/// Prints each summary (one JSON value or table per input, a JSON array for several) and
/// each failure, naming its file; fails if any input failed.
fn report(
    req: &FilesRequest,
    results: Vec<Result<retail_ai::Summary, retail_ai::RuntimeError>>,
    out: &std::path::Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let several = req.inputs.len() > 1;
    let mut summaries = Vec::new();
    let mut failed = 0;
    for (input, result) in req.inputs.iter().zip(results) {
        match result {
            Ok(s) => summaries.push(s),
            Err(e) if several => {
                failed += 1;
                // Say which input failed, unless the error already does.
                let (text, name) = (e.to_string(), input.display().to_string());
                if text.contains(&name) {
                    eprintln!("error: {text}");
                } else {
                    eprintln!("error: {name}: {text}");
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    if json {
        let text = if several {
            serde_json::to_string_pretty(&summaries)?
        } else {
            serde_json::to_string_pretty(&summaries[0])?
        };
        println!("{text}");
    } else {
        for s in &summaries {
            let dir = if several { out.join(&s.stream) } else { out.to_owned() };
            print!("{}", render_table(s, Some(&dir)));
        }
    }
    if failed > 0 {
        return Err(anyhow::anyhow!("{failed} of {} inputs failed", req.inputs.len()));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(batches: &[datafusion::arrow::array::RecordBatch], format: OutputFormat) -> anyhow::Result<String> {
    use datafusion::arrow;
    Ok(match format {
        OutputFormat::Table => format!("{}\n", arrow::util::pretty::pretty_format_batches(batches)?),
        OutputFormat::Csv => {
            let mut w = arrow::csv::Writer::new(Vec::new());
            for b in batches {
                w.write(b)?;
            }
            String::from_utf8(w.into_inner())?
        }
        OutputFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            String::from_utf8(w.into_inner())?
        }
    })
}
