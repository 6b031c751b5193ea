//! The multi-stream engine: any number of streams in one process, each with its own
//! decoder thread, tracker, analytics and event time, sharing one pool of inference workers
//! fed by cross-stream batching (see [`crate::queue`]).
//!
//! Threads per stream: the decoder (source → shared queue, with the source's backpressure
//! policy) and the collector (results back in frame order → [`StreamAnalysis`]). Threads
//! shared: one inference worker per backend (one single-threaded ONNX Runtime session per
//! core is the fastest on CPUs). Every queue is bounded by the stream's outstanding-frame
//! limit, so a slow stage slows its own stream's decoding instead of filling memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use retail_core::Detection;
use retail_infer::{FrameRef, InferError, InferenceBackend};
use retail_ingest::{FrameSource, IngestError, VideoFrame};
use tracing::{info, warn};

use crate::gate::MotionGate;
use crate::progress::{PROGRESS_EVERY, StageTotals};
use crate::queue::{InferQueue, Pushed, Taken};
use crate::stream::{Analysed, ModelFacts, StreamAnalysis, StreamJob};
use crate::{Config, ModelChoice, RuntimeError, StreamProgress, Summary};

/// How the inference workers batch frames.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    /// Frames per inference call (capped by what the backend takes).
    pub max_frames: usize,
    /// How long a worker waits for a batch to fill after its first frame.
    pub deadline: Duration,
    /// Frames each stream may have between decoding and analysis.
    pub queue_frames: usize,
}

struct Queued {
    frame: VideoFrame,
    decode: Duration,
    reply: Sender<Outcome>,
}

enum Outcome {
    Inferred {
        seq: u64,
        frame: VideoFrame,
        detections: Vec<Detection>,
        times: [Duration; 3],
    },
    /// Too like the last frame sent to inference (motion gating): it takes the detections of
    /// the frame before it, without inference.
    Gated {
        seq: u64,
        frame: VideoFrame,
        decode: Duration,
    },
    Dropped(u64),
    Failed(Failure),
    SourceEnd {
        frames: u64,
    },
    SourceFailed(IngestError),
}

/// Why inference gave no result for a frame.
#[derive(Clone, Debug)]
enum Failure {
    Infer(Arc<InferError>),
    Worker(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Infer(e) => write!(f, "{e}"),
            Failure::Worker(reason) => f.write_str(reason),
        }
    }
}

/// A pool of inference workers serving any number of streams.
pub struct Engine {
    queue: Arc<InferQueue<Queued>>,
    workers: Vec<JoinHandle<()>>,
    batching: Batching,
    model: ModelFacts,
}

impl Engine {
    /// Starts one worker per backend.
    pub fn new(
        backends: Vec<Box<dyn InferenceBackend>>,
        batching: Batching,
        model: &ModelChoice,
    ) -> Result<Self, RuntimeError> {
        let queue = Arc::new(InferQueue::default());
        let facts = ModelFacts {
            name: model.manifest.name.clone(),
            labels: model.manifest.labels.names.clone(),
            score_threshold: model.score_threshold,
            workers: backends.len(),
            gpu: model.cuda.as_ref().and_then(|c| usize::try_from(c.device).ok()),
        };
        // Built first so that a failed spawn shuts down the workers already started.
        let mut engine = Engine { queue: queue.clone(), workers: Vec::new(), batching, model: facts };
        for (i, backend) in backends.into_iter().enumerate() {
            let queue = queue.clone();
            let worker = std::thread::Builder::new()
                .name(format!("infer-{i}"))
                .spawn(move || infer_worker(&queue, backend, batching))
                .map_err(|e| RuntimeError::Internal(format!("cannot start inference worker {i}: {e}")))?;
            engine.workers.push(worker);
        }
        Ok(engine)
    }

    /// Loads the config's model once per worker and starts the engine.
    pub fn from_config(config: &Config, model: &ModelChoice) -> Result<Self, RuntimeError> {
        let d = &config.detector;
        let mut backends: Vec<Box<dyn InferenceBackend>> = Vec::new();
        let accelerator = ModelChoice::accelerator(config, d.batch_size);
        for _ in 0..d.resolved_workers() {
            backends.push(model.load_backend(config, d.batch_size, &accelerator)?);
        }
        let per_call = backends[0].max_batch();
        if per_call < d.batch_size {
            info!(
                requested = d.batch_size,
                model_takes = per_call,
                "the model has a fixed batch size: frames go one per call"
            );
        }
        let batching = Batching {
            // A fixed-batch model takes frames one per call: a worker holding several would
            // only keep them from the other workers.
            max_frames: d.batch_size.min(per_call),
            deadline: Duration::from_millis(d.batch_deadline_ms),
            queue_frames: d.resolved_queue_frames(),
        };
        info!(model = %model.model_path.display(), workers = backends.len(), batch = d.batch_size, "model loaded");
        Engine::new(backends, batching, model)
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Starts a stream. Its outputs are created now (in staging); a bad output folder fails
    /// here, before any frame is decoded.
    pub fn start(&self, job: StreamJob) -> Result<StreamHandle, RuntimeError> {
        let analysis = StreamAnalysis::new(&job, &self.model)?;
        let id = self.queue.register(self.batching.queue_frames, job.source.backpressure());
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = Arc::new(AtomicBool::new(false));
        let (tx, rx) = unbounded();
        let stream = job.stream.0.clone();
        let expected = job.source.info().estimated_frames();
        let decoder = {
            let (queue, cancel) = (self.queue.clone(), cancel.clone());
            let gate = job.motion_threshold.map(|t| MotionGate::new(t, self.model.gpu));
            let source = job.source;
            let spawned = std::thread::Builder::new()
                .name(format!("decode-{id}"))
                .spawn(move || decode(source, gate, &queue, id, &cancel, tx));
            match spawned {
                Ok(d) => d,
                Err(e) => {
                    self.queue.unregister(id);
                    return Err(RuntimeError::Internal(format!("stream {stream}: cannot start its decoder: {e}")));
                }
            }
        };
        let collector = {
            let ctx = Collector {
                queue: self.queue.clone(),
                id,
                stream: stream.clone(),
                cancel: cancel.clone(),
                cancelled: cancelled.clone(),
                progress: job.progress,
                expected,
            };
            let spawned =
                std::thread::Builder::new().name(format!("collect-{id}")).spawn(move || ctx.run(analysis, &rx));
            match spawned {
                Ok(c) => c,
                Err(e) => {
                    cancel.store(true, Ordering::SeqCst);
                    self.queue.close(id);
                    let _ = decoder.join();
                    self.queue.unregister(id);
                    return Err(RuntimeError::Internal(format!("stream {stream}: cannot start its collector: {e}")));
                }
            }
        };
        Ok(StreamHandle {
            id,
            stream,
            queue: self.queue.clone(),
            cancel,
            cancelled,
            decoder: Some(decoder),
            collector: Some(collector),
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.queue.shutdown();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A running stream.
pub struct StreamHandle {
    id: u64,
    stream: String,
    queue: Arc<InferQueue<Queued>>,
    /// Stops the decoder (set by a cancel and whenever the collector ends).
    cancel: Arc<AtomicBool>,
    /// The caller cancelled the stream.
    cancelled: Arc<AtomicBool>,
    decoder: Option<JoinHandle<()>>,
    collector: Option<JoinHandle<Result<Summary, RuntimeError>>>,
}

impl StreamHandle {
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Stops this stream soon (the other streams go on); [`join`](Self::join) then returns
    /// [`RuntimeError::Cancelled`] and nothing of it is left in the output locations.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.cancel.store(true, Ordering::SeqCst);
        self.queue.close(self.id);
    }

    /// Whether the stream has ended ([`join`](Self::join) will not wait).
    pub fn is_finished(&self) -> bool {
        self.collector.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the stream to end; its summary, or why it failed.
    pub fn join(mut self) -> Result<Summary, RuntimeError> {
        let result = match self.collector.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(RuntimeError::Internal(format!("stream {}: collector thread panicked", self.stream))),
        };
        self.stop_decoder();
        result
    }

    fn stop_decoder(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
        self.queue.close(self.id);
        if let Some(d) = self.decoder.take() {
            let _ = d.join();
        }
        self.queue.unregister(self.id);
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        if self.collector.is_some() {
            self.cancel();
            if let Some(c) = self.collector.take() {
                let _ = c.join();
            }
        }
        if self.decoder.is_some() {
            self.stop_decoder();
        }
    }
}

fn decode(
    mut source: Box<dyn FrameSource>,
    mut gate: Option<MotionGate>,
    queue: &InferQueue<Queued>,
    id: u64,
    cancel: &AtomicBool,
    tx: Sender<Outcome>,
) {
    let mut seq = 0u64;
    let mut last_pts: Option<u64> = None;
    while !cancel.load(Ordering::Relaxed) {
        let started = Instant::now();
        let frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Outcome::SourceFailed(e));
                return;
            }
        };
        // After a gap (a reconnect) the scene is compared afresh.
        if let Some(gate) = gate.as_mut()
            && last_pts.is_some_and(|p| frame.pts_ns.saturating_sub(p) > GATE_MAX_GAP_NS)
        {
            gate.forget();
        }
        last_pts = Some(frame.pts_ns);
        if gate.as_mut().is_some_and(|g| g.skips(&frame)) {
            metrics::counter!("retail_frames_gated_total").increment(1);
            // Its pixels are not needed any more: a gated frame costs no memory to speak of,
            // and a decoder picture goes back to its pool now.
            let mut frame = frame;
            (frame.pixels, frame.device) = (Vec::new(), None);
            let _ = tx.send(Outcome::Gated { seq, frame, decode: started.elapsed() });
            seq += 1;
            continue;
        }
        let item = Queued { frame, decode: started.elapsed(), reply: tx.clone() };
        match queue.push(id, seq, item) {
            Pushed::Queued => {}
            Pushed::Dropped(old) => {
                metrics::counter!("retail_frames_dropped_total").increment(1);
                let _ = tx.send(Outcome::Dropped(old));
                // The dropped frame may have been the reference: gate against a frame that
                // is sure to be inferred.
                if let Some(gate) = gate.as_mut() {
                    gate.forget();
                }
            }
            Pushed::Closed => return,
        }
        seq += 1;
    }
    let _ = tx.send(Outcome::SourceEnd { frames: seq });
}

/// A gap in frame times after which motion gating starts afresh (a reconnect, an outage).
const GATE_MAX_GAP_NS: u64 = 2_000_000_000;
fn infer_worker(queue: &InferQueue<Queued>, mut backend: Box<dyn InferenceBackend>, batching: Batching) {
    while let Some(batch) = queue.pop_batch(batching.max_frames, batching.deadline) {
        metrics::histogram!("retail_inference_batch_frames").record(batch.len() as f64);
        if let Err(batch) = detect_and_reply(queue, backend.as_mut(), batch) {
            // A failed batch is retried frame by frame, so that only the streams whose frames
            // fail on their own stop.
            for t in batch {
                let _ = detect_and_reply(queue, backend.as_mut(), vec![t]);
            }
        }
    }
}

/// Runs one call on `frames` and sends each its result. On failure (an error, a panic, a
/// wrong number of results) a batch of several is handed back untouched, and a batch of one
/// gets the error.
fn detect_and_reply(
    queue: &InferQueue<Queued>,
    backend: &mut dyn InferenceBackend,
    frames: Vec<Taken<Queued>>,
) -> Result<(), Vec<Taken<Queued>>> {
    let started = Instant::now();
    let result = {
        let refs: Vec<FrameRef<'_>> = frames
            .iter()
            .map(|t| {
                let f = &t.item.frame;
                let device = f.device.as_ref();
                FrameRef { pixels: &f.pixels, width: f.width, height: f.height, colour: f.colour, device }
            })
            .collect();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.detect_batch(&refs)))
    };
    let failure = match result {
        Ok(Ok(all)) if all.len() == frames.len() => {
            let per_frame = started.elapsed() / frames.len() as u32;
            for (t, detections) in frames.into_iter().zip(all) {
                let Queued { mut frame, decode, reply } = t.item;
                // A picture in GPU memory is done with (the backend has synchronised): its
                // decoder buffer goes back to the pool now, not after analysis.
                frame.device = None;
                let out = Outcome::Inferred { seq: t.seq, frame, detections, times: [decode, t.waited, per_frame] };
                if reply.send(out).is_err() {
                    queue.done(t.stream, 1); // the stream has gone: free its room
                }
            }
            return Ok(());
        }
        Ok(Ok(all)) => Failure::Worker(format!("{} results for {} frames", all.len(), frames.len())),
        Ok(Err(e)) => Failure::Infer(Arc::new(e)),
        Err(_) => Failure::Worker(format!("inference panicked ({})", backend.name())),
    };
    if frames.len() > 1 {
        return Err(frames);
    }
    warn!(error = %failure, "inference failed; its stream stops");
    for t in frames {
        let _ = t.item.reply.send(Outcome::Failed(failure.clone()));
        queue.done(t.stream, 1);
    }
    Ok(())
}

struct Collector {
    queue: Arc<InferQueue<Queued>>,
    id: u64,
    stream: String,
    cancel: Arc<AtomicBool>,
    cancelled: Arc<AtomicBool>,
    progress: Option<crate::ProgressFn>,
    expected: Option<u64>,
}

/// Collector state besides the analysis: reordering and progress.
struct Tally {
    next: u64,
    end: Option<u64>,
    dropped: u64,
    gated: u64,
    /// The last analysed frame's detections, for gated frames.
    last_detections: Vec<Detection>,
    totals: StageTotals,
    started: Instant,
    reported: Instant,
}

impl Collector {
    fn run(self, mut analysis: StreamAnalysis, rx: &Receiver<Outcome>) -> Result<Summary, RuntimeError> {
        let now = Instant::now();
        let mut t = Tally {
            next: 0,
            end: None,
            dropped: 0,
            gated: 0,
            last_detections: Vec::new(),
            totals: StageTotals::default(),
            started: now,
            reported: now,
        };
        let result = self.collect(&mut analysis, rx, &mut t);
        // Whatever happened, the decoder must not wait for room any more.
        self.cancel.store(true, Ordering::SeqCst);
        self.queue.close(self.id);
        let (frames, video_s) = (analysis.frames, analysis.last_end_ns as f64 / 1e9);
        let result = result.and_then(|()| {
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(RuntimeError::Cancelled { stream: self.stream.clone() });
            }
            analysis.finish()
        });
        self.report(frames, video_s, true, &t);
        result
    }

    fn collect(&self, a: &mut StreamAnalysis, rx: &Receiver<Outcome>, t: &mut Tally) -> Result<(), RuntimeError> {
        let mut pending: BTreeMap<u64, Outcome> = BTreeMap::new();
        while t.end != Some(t.next) {
            if self.cancelled.load(Ordering::Relaxed) {
                return Err(RuntimeError::Cancelled { stream: self.stream.clone() });
            }
            let msg = match rx.recv_timeout(PROGRESS_EVERY) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                // Every sender is gone: the decoder stopped at a cancel or an engine shutdown.
                Err(RecvTimeoutError::Disconnected) if self.cancelled.load(Ordering::SeqCst) => {
                    return Err(RuntimeError::Cancelled { stream: self.stream.clone() });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(RuntimeError::Internal(format!(
                        "stream {}: the engine shut down before the stream ended",
                        self.stream
                    )));
                }
            };
            match msg {
                Outcome::SourceEnd { frames } => t.end = Some(frames),
                Outcome::SourceFailed(e) => return Err(e.into()),
                Outcome::Failed(Failure::Infer(source)) => {
                    return Err(RuntimeError::Inference { stream: self.stream.clone(), source });
                }
                Outcome::Failed(Failure::Worker(reason)) => {
                    return Err(RuntimeError::InferenceWorker { stream: self.stream.clone(), reason });
                }
                Outcome::Dropped(seq) => {
                    pending.insert(seq, Outcome::Dropped(seq));
                }
                Outcome::Inferred { seq, .. } | Outcome::Gated { seq, .. } => {
                    pending.insert(seq, msg);
                }
            }
            while let Some(m) = pending.remove(&t.next) {
                // A dropped frame never held a place of its own (it gave it to a newer one).
                let inferred = matches!(m, Outcome::Inferred { .. });
                self.consume(a, m, t)?;
                if inferred {
                    self.queue.done(self.id, 1);
                }
                t.next += 1;
            }
            if t.reported.elapsed() >= PROGRESS_EVERY {
                self.report(a.frames, a.last_end_ns as f64 / 1e9, false, t);
                t.reported = Instant::now();
            }
        }
        Ok(())
    }

    fn consume(&self, a: &mut StreamAnalysis, m: Outcome, t: &mut Tally) -> Result<(), RuntimeError> {
        match m {
            Outcome::Dropped(_) => t.dropped += 1,
            Outcome::Inferred { frame, detections, times: [decode, queue, infer], .. } => {
                let started = Instant::now();
                t.totals.decode += decode;
                t.totals.queue += queue;
                t.totals.infer += infer;
                a.process(Analysed {
                    index: frame.index,
                    pts_ns: frame.pts_ns,
                    duration_ns: frame.duration_ns,
                    detections: &detections,
                    display: frame.display,
                })?;
                t.last_detections = detections;
                t.totals.analyse += started.elapsed();
            }
            Outcome::Gated { frame, decode, .. } => {
                let started = Instant::now();
                t.totals.decode += decode;
                t.gated += 1;
                a.process(Analysed {
                    index: frame.index,
                    pts_ns: frame.pts_ns,
                    duration_ns: frame.duration_ns,
                    detections: &t.last_detections,
                    display: frame.display,
                })?;
                t.totals.analyse += started.elapsed();
            }
            _ => {}
        }
        Ok(())
    }

    fn report(&self, frames: u64, video_s: f64, finished: bool, t: &Tally) {
        if let Some(f) = &self.progress {
            f(&StreamProgress {
                frames,
                frames_dropped: t.dropped,
                frames_gated: t.gated,
                frames_waiting: self.queue.waiting(self.id),
                expected_frames: self.expected,
                video_s,
                elapsed_s: t.started.elapsed().as_secs_f64(),
                latency: t.totals.means(frames),
                finished,
            });
        }
    }
}
