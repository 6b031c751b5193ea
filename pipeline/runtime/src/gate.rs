//! Motion gating (see [`crate::StreamJob::motion_threshold`]): a frame too like the last
//! frame sent to inference skips inference and takes the detections of the frame before it.
//! Later frames are compared with that frame, not with their neighbour, so that slow change
//! still adds up to an inference. Packed frames (the CPU model's, at its input size) are
//! compared byte for byte in 64 horizontal strips. Frames at the video's own size in YUV are
//! compared by their luma plane in 64 bands of rows: host I420 here, pictures in GPU memory
//! on the GPU (`retail_kernels::gpu::LumaGate`, feature `tensorrt`), so a stream that falls
//! back from GPU to CPU decoding keeps its sensitivity. The two measures differ: the same
//! threshold is not the same sensitivity on the CPU model's path and the GPU path.

use retail_core::{DevicePicture, StreamId};
use retail_ingest::VideoFrame;

/// Horizontal strips a host frame is cut into.
const GATE_STRIPS: usize = 64;

/// One stream's gate.
pub(crate) struct MotionGate {
    threshold: f32,
    /// The last host frame sent to inference.
    host: Option<Vec<u8>>,
    device: DeviceGate,
}

impl MotionGate {
    /// A gate at `threshold` (mean absolute difference, 0..255); `gpu` is the device the
    /// sources decode into, if they do.
    pub fn new(threshold: f32, gpu: Option<usize>) -> Self {
        MotionGate { threshold, host: None, device: DeviceGate::new(gpu) }
    }

    /// Forgets the reference (after a gap in the stream, or when it may have been dropped
    /// before inference): the next frame is sent to inference.
    pub fn forget(&mut self) {
        self.host = None;
        self.device.forget();
    }

    /// Whether `frame` may skip inference. A frame that may not becomes the reference.
    pub fn skips(&mut self, frame: &VideoFrame) -> bool {
        if let Some(picture) = &frame.device {
            // A stream that moves between host and device frames (a GPU decoding fault)
            // compares each kind with its own kind only after the first of the new kind.
            self.host = None;
            return self.device.skips(picture, self.threshold, &frame.stream);
        }
        self.device.forget();
        let compared = compared_bytes(frame);
        if self.host.as_deref().is_some_and(|r| max_strip_diff(r, compared) < self.threshold) {
            return true;
        }
        self.host = Some(compared.to_vec());
        false
    }
}

/// What a host frame is compared by: an I420 frame's luma plane (its first width x height
/// bytes; its length, 1.5 bytes a pixel, tells it from packed 3-byte pixels), so that strips
/// are bands of rows as on the GPU; else all of a packed frame.
fn compared_bytes(frame: &VideoFrame) -> &[u8] {
    let pixels = frame.width as usize * frame.height as usize;
    if pixels > 0 && frame.pixels.len() == pixels * 3 / 2 { &frame.pixels[..pixels] } else { &frame.pixels }
}

/// The largest mean absolute difference (0..255) over horizontal strips of two frames: a
/// person in a small part of the frame moves one strip's mean far more than the whole
/// frame's. Frames of another size differ fully.
fn max_strip_diff(a: &[u8], b: &[u8]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return f32::MAX;
    }
    let strip = a.len().div_ceil(GATE_STRIPS);
    a.chunks(strip)
        .zip(b.chunks(strip))
        .map(|(x, y)| {
            let sum: u64 = x.iter().zip(y).map(|(p, q)| u64::from(p.abs_diff(*q))).sum();
            (sum as f64 / x.len() as f64) as f32
        })
        .fold(0.0, f32::max)
}

/// Gating of frames in GPU memory: a [`retail_kernels::gpu::LumaGate`] made at the first
/// such frame. If the GPU fails it, gating is off for the stream (every frame inferred),
/// with a warning, rather than the stream stopping.
#[cfg(feature = "tensorrt")]
struct DeviceGate {
    gpu: Option<usize>,
    gate: Option<retail_kernels::gpu::LumaGate>,
    off: bool,
}

#[cfg(feature = "tensorrt")]
impl DeviceGate {
    fn new(gpu: Option<usize>) -> Self {
        DeviceGate { gpu, gate: None, off: false }
    }

    fn skips(&mut self, picture: &DevicePicture, threshold: f32, stream: &StreamId) -> bool {
        if self.off {
            return false;
        }
        match self.compare(picture, threshold) {
            Ok(skip) => skip,
            Err(e) => {
                tracing::warn!(stream = %stream, error = %e, "motion gating on the GPU failed: off for this stream");
                (self.off, self.gate) = (true, None);
                false
            }
        }
    }

    fn compare(&mut self, picture: &DevicePicture, threshold: f32) -> Result<bool, String> {
        let gate = match &mut self.gate {
            Some(gate) => gate,
            None => {
                let gpu = self.gpu.ok_or("no GPU named for the decoders' pictures")?;
                self.gate.insert(retail_kernels::gpu::LumaGate::new(gpu).map_err(|e| e.to_string())?)
            }
        };
        if gate.difference(picture).map_err(|e| e.to_string())? < threshold {
            return Ok(true);
        }
        gate.keep(picture).map_err(|e| e.to_string())?;
        Ok(false)
    }

    fn forget(&mut self) {
        if let Some(gate) = &mut self.gate {
            gate.forget();
        }
    }
}

/// Without the GPU path there are no frames in GPU memory to gate; should one come, it is
/// inferred.
#[cfg(not(feature = "tensorrt"))]
struct DeviceGate;

#[cfg(not(feature = "tensorrt"))]
impl DeviceGate {
    fn new(_: Option<usize>) -> Self {
        DeviceGate
    }

    fn skips(&mut self, _: &DevicePicture, _: f32, _: &StreamId) -> bool {
        false
    }

    fn forget(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use retail_core::YuvColour;

    #[test]
    fn a_small_person_entering_is_motion_but_sensor_noise_is_not() {
        let (w, h) = (320, 320);
        let still = vec![100u8; w * h * 3];
        let noisy: Vec<u8> = still.iter().enumerate().map(|(i, p)| if i % 2 == 0 { p + 1 } else { p - 1 }).collect();
        assert!(max_strip_diff(&still, &noisy) <= 1.0);
        // A 40×40 person (1.6 % of the frame) brighter by 60.
        let mut person = still.clone();
        for y in 100..140 {
            for x in 150..190 {
                for c in 0..3 {
                    person[(y * w + x) * 3 + c] = 160;
                }
            }
        }
        let whole_frame_mean = 60.0 * 1600.0 / (w * h) as f32;
        assert!(whole_frame_mean < 1.0, "a whole-frame mean would miss them: {whole_frame_mean}");
        assert!(max_strip_diff(&still, &person) > 5.0, "{}", max_strip_diff(&still, &person));
        assert_eq!(max_strip_diff(&still, &still[..10]), f32::MAX);
    }

    fn frame(pixels: Vec<u8>) -> VideoFrame {
        VideoFrame {
            stream: "s".into(),
            index: 0,
            pts_ns: 0,
            duration_ns: None,
            pixels,
            width: 8,
            height: 8,
            colour: YuvColour::default(),
            device: None,
            display: None,
        }
    }

    /// Frames are compared with the last one inferred, so slow drift still adds up to an
    /// inference; a forgotten reference sends the next frame to inference.
    #[test]
    fn frames_are_compared_with_the_last_one_inferred() {
        let mut gate = MotionGate::new(3.0, None);
        assert!(!gate.skips(&frame(vec![100; 192])), "nothing to compare with");
        assert!(gate.skips(&frame(vec![102; 192])));
        assert!(!gate.skips(&frame(vec![104; 192])), "drifted by 4 from the one inferred");
        assert!(gate.skips(&frame(vec![106; 192])));
        gate.forget();
        assert!(!gate.skips(&frame(vec![106; 192])));
        assert!(!gate.skips(&frame(vec![106; 48])), "another size");
    }

    /// I420 frames (the GPU path's host frames) are gated by their luma, as pictures in GPU
    /// memory are: a change of colour alone is no motion, a change of brightness is.
    #[test]
    fn i420_frames_are_compared_by_their_luma() {
        let i420 = |y: u8, uv: u8| {
            let mut f = frame([vec![y; 64], vec![uv; 32]].concat());
            (f.width, f.height) = (8, 8);
            f
        };
        let mut gate = MotionGate::new(3.0, None);
        assert!(!gate.skips(&i420(100, 128)));
        assert!(gate.skips(&i420(100, 200)), "chroma only");
        assert!(!gate.skips(&i420(110, 128)), "brighter");
    }
}
