//! GPU preprocessing benchmark (feature `cuda`; run by benches/gpu/verify.sh on a GPU machine).
//!
//! Batches of 1, 8 and 32 NV12 1080p frames to the 416x416 model input, f32 and f16: median
//! time per launch, frames/s, and achieved bandwidth counted as the frames' bytes plus the
//! tensor's bytes per launch, next to the device-to-device copy bandwidth measured in the same
//! run (bytes read + written; goal: preprocessing at 70 % of it or more). Then the CPU
//! specification (`retail_kernels::reference`, one thread) on the same frames for frames/s.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use retail_kernels::gpu::Gpu;
use retail_kernels::{Matrix, Range, Resize, YuvFormat, YuvFrame, model_input, reference};

#[derive(Parser)]
struct Args {
    /// Launches timed per configuration (the median is reported).
    #[arg(long, default_value_t = 50)]
    reps: usize,
    /// Frames for the CPU figure.
    #[arg(long, default_value_t = 8)]
    cpu_frames: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let gpu = Gpu::new(0).context("GPU")?;
    let stream = gpu.stream().clone();
    let (w, h) = (1920u32, 1080u32);
    let luma: Vec<u8> = (0..(w * h) as usize).map(|i| (i * 7 % 251) as u8).collect();
    let uv: Vec<u8> = (0..(w * h / 2) as usize).map(|i| (i * 13 % 241) as u8).collect();
    let frame = YuvFrame {
        format: YuvFormat::Nv12,
        width: w,
        height: h,
        luma: &luma,
        luma_pitch: w as usize,
        chroma_u: &uv,
        chroma_v: &[],
        chroma_pitch: w as usize,
    };
    let manifest = retail_infer::Manifest::bundled();
    let input = |half| model_input(&manifest, Resize::Stretch, half);

    // Device-to-device copy of 1 GiB, the bandwidth ceiling.
    let bytes = 1usize << 30;
    let src = stream.alloc_zeros::<u8>(bytes)?;
    let mut dst = stream.alloc_zeros::<u8>(bytes)?;
    let mut copy = Vec::new();
    for _ in 0..10 {
        stream.synchronize()?;
        let t = Instant::now();
        stream.memcpy_dtod(&src, &mut dst)?;
        stream.synchronize()?;
        copy.push(t.elapsed().as_secs_f64());
    }
    let copy_gbs = 2.0 * bytes as f64 / median(copy) / 1e9;
    println!("device-to-device copy: {copy_gbs:.0} GB/s (read + written)");
    println!("{:>5} {:>5} {:>10} {:>10} {:>9} {:>8}", "batch", "type", "ms/launch", "frames/s", "GB/s", "of copy");
    for batch in [1usize, 8, 32] {
        let frames = vec![frame; batch];
        for half in [false, true] {
            let input = input(half);
            let device = gpu.upload(&frames, &input)?;
            let n = batch * input.frame_len();
            let mut times = Vec::new();
            let mut out16 = stream.alloc_zeros::<u16>(n)?;
            let mut out32 = stream.alloc_zeros::<f32>(n)?;
            for _ in 0..args.reps + 3 {
                stream.synchronize()?;
                let t = Instant::now();
                if half {
                    gpu.preprocess_into(&device, Matrix::Bt709, Range::Limited, &mut out16)?;
                } else {
                    gpu.preprocess_into(&device, Matrix::Bt709, Range::Limited, &mut out32)?;
                }
                stream.synchronize()?;
                times.push(t.elapsed().as_secs_f64());
            }
            let s = median(times.split_off(3));
            let moved =
                batch as f64 * (f64::from(w * h) * 1.5 + input.frame_len() as f64 * if half { 2.0 } else { 4.0 });
            let gbs = moved / s / 1e9;
            let kind = if half { "f16" } else { "f32" };
            let fps = batch as f64 / s;
            println!("{batch:>5} {kind:>5} {:>10.3} {fps:>10.0} {gbs:>9.0} {:>7.0}%", s * 1e3, 100.0 * gbs / copy_gbs);
        }
    }
    let frames = vec![frame; args.cpu_frames];
    let t = Instant::now();
    let cpu = reference::preprocess(&frames, &input(false), Matrix::Bt709, Range::Limited)?;
    let cpu_fps = args.cpu_frames as f64 / t.elapsed().as_secs_f64();
    println!("CPU specification (1 thread): {cpu_fps:.1} frames/s ({} values)", cpu.len());
    Ok(())
}
