//! GStreamer's CUDA memory for the GPU path, through a small FFI to libgstcuda-1.0 (from
//! gst-plugins-bad; there are no Rust bindings for it).
//!
//! - [`GstCuda::context`] wraps the kernels' CUDA context as a `gst.cuda.context`, so that
//!   `nvh264dec`/`nvh265dec` and `cudaupload` allocate in the same context the kernels launch
//!   in: a device address is only valid in its own context.
//! - [`GstCuda::picture`] maps a decoded `memory:CUDAMemory` buffer for CUDA access
//!   (`GST_MAP_CUDA`) and hands its plane addresses on as a [`DevicePicture`], which keeps the
//!   buffer mapped until the last clone is dropped.
//!
//! The library is opened at run time (like the CUDA driver by the kernels), so building needs
//! no development package, and a machine without it gets [`GstCudaError::Library`].
//! The struct below mirrors `GstCudaMemory` of GStreamer 1.22 (`gst/cuda/gstcudamemory.h`),
//! whose public part has kept this layout since.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

use std::ffi::{c_int, c_uint, c_void};
use std::sync::{Arc, OnceLock};

use gstreamer as gst;
use gstreamer::ffi as gst_ffi;
use gstreamer::glib::translate::ToGlibPtr;
use gstreamer::prelude::*;
use gstreamer_video::ffi as video_ffi;
use retail_core::{CudaContextRef, DevicePicture, DeviceYuv};

/// What can go wrong between GStreamer's CUDA memory and the kernels.
#[derive(Debug, thiserror::Error)]
pub enum GstCudaError {
    /// libgstcuda-1.0 (gst-plugins-bad 1.22 or later) could not be opened or lacks a symbol.
    #[error("GStreamer's CUDA library libgstcuda-1.0: {reason}")]
    Library { reason: String },
    /// libgstcuda could not load the CUDA driver.
    #[error("GStreamer's CUDA library could not load the CUDA driver (libcuda.so)")]
    NoDriver,
    /// The kernels' context could not be wrapped for GStreamer.
    #[error("GStreamer could not wrap the CUDA context of device {device}")]
    Wrap { device: i32 },
    /// A decoded buffer is not what the CUDA branch negotiates.
    #[error("decoded buffer: {why}")]
    Buffer { why: String },
    /// The decoder allocated in another CUDA context than the kernels' (the shared context
    /// was not used), so its addresses would be invalid for the kernels.
    #[error(
        "decoded buffer is in CUDA context {found:#x}, not the kernels' {expected:#x} (an element did not take the shared context)"
    )]
    OtherContext { found: usize, expected: usize },
}

/// `GstCudaMemory` (gst/cuda/gstcudamemory.h, 1.22): only the public fields are read.
#[repr(C)]
struct CudaMemoryAbi {
    mem: gst_ffi::GstMemory,
    context: *mut c_void,
    info: video_ffi::GstVideoInfo,
}

/// `GST_MAP_CUDA`: `GST_MAP_FLAG_LAST << 1`; the mapped data is then a `CUdeviceptr`.
const MAP_CUDA: gst_ffi::GstMapFlags = gst_ffi::GST_MAP_FLAG_LAST << 1;
/// `GST_CAPS_FEATURE_MEMORY_CUDA_MEMORY`.
pub const CUDA_MEMORY: &str = "memory:CUDAMemory";

/// The elements the CUDA branch needs: present only where nvcodec found a working driver.
pub const ELEMENTS: [&str; 2] = ["cudaupload", "cudaconvert"];

type LoadLibrary = unsafe extern "C" fn() -> gst::glib::ffi::gboolean;
type NewWrapped = unsafe extern "C" fn(*mut c_void, c_int) -> *mut c_void;
type NewContext = unsafe extern "C" fn(*mut c_void) -> *mut gst_ffi::GstContext;
type IsCudaMemory = unsafe extern "C" fn(*mut gst_ffi::GstMemory) -> gst::glib::ffi::gboolean;
type GetHandle = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type MemorySync = unsafe extern "C" fn(*mut gst_ffi::GstMemory);

/// libgstcuda-1.0's entry points the GPU path uses.
pub struct GstCuda {
    _lib: libloading::Library,
    load_library: LoadLibrary,
    new_wrapped: NewWrapped,
    new_context: NewContext,
    is_cuda_memory: IsCudaMemory,
    get_handle: GetHandle,
    /// `gst_cuda_memory_sync` (1.24 and later, where decoders and elements work on CUDA
    /// streams and leave a memory's last write pending): waits for it before the kernels read.
    /// 1.22 finishes its writes before handing a buffer on, and has no such call.
    memory_sync: Option<MemorySync>,
}

impl std::fmt::Debug for GstCuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GstCuda")
    }
}

/// The library, opened once per process.
pub fn library() -> Result<&'static GstCuda, GstCudaError> {
    static LIB: OnceLock<Result<GstCuda, String>> = OnceLock::new();
    LIB.get_or_init(GstCuda::open).as_ref().map_err(|reason| GstCudaError::Library { reason: reason.clone() })
}

/// Whether this machine can decode into CUDA memory: the library opens and GStreamer's
/// nvcodec plugin registered its CUDA elements (it does so only with a working driver).
pub fn available() -> bool {
    gst::init().is_ok() && ELEMENTS.iter().all(|e| gst::ElementFactory::find(e).is_some()) && library().is_ok()
}

/// The names of nvcodec's NVDEC decoders on CUDA device `device`. nvcodec registers one per
/// codec and device (`nvh264dec`, `nvh264device1dec`, ...), numbered among the devices that
/// have the codec rather than by ordinal, so each is asked for its `cuda-device-id`.
pub fn hardware_decoders(device: i32) -> Vec<String> {
    gst::Registry::get()
        .features(gst::ElementFactory::static_type())
        .into_iter()
        .filter_map(|f| f.downcast::<gst::ElementFactory>().ok())
        .filter(|f| {
            f.name().starts_with("nv")
                && f.metadata(gst::ELEMENT_METADATA_KLASS).is_some_and(|k| k.contains("Decoder"))
                && decoder_device(f) == Some(device)
        })
        .map(|f| f.name().to_string())
        .collect()
}

/// The CUDA device an NVDEC decoder factory's elements decode on.
fn decoder_device(factory: &gst::ElementFactory) -> Option<i32> {
    let element = factory.create().build().ok()?;
    let value = element.has_property("cuda-device-id").then(|| element.property_value("cuda-device-id"))?;
    value.get::<u32>().ok().and_then(|d| i32::try_from(d).ok()).or_else(|| value.get::<i32>().ok())
}

impl GstCuda {
    fn open() -> Result<GstCuda, String> {
        // SAFETY: libgstcuda's initialisers only register GObject types; GStreamer's own
        // libraries it links are already loaded by this process.
        let lib = unsafe { libloading::Library::new("libgstcuda-1.0.so.0") }.map_err(|e| e.to_string())?;
        // SAFETY: each type matches the symbol's C declaration in gst/cuda/*.h (1.22).
        unsafe {
            Ok(GstCuda {
                load_library: symbol(&lib, b"gst_cuda_load_library\0")?,
                new_wrapped: symbol(&lib, b"gst_cuda_context_new_wrapped\0")?,
                new_context: symbol(&lib, b"gst_context_new_cuda_context\0")?,
                is_cuda_memory: symbol(&lib, b"gst_is_cuda_memory\0")?,
                get_handle: symbol(&lib, b"gst_cuda_context_get_handle\0")?,
                memory_sync: symbol(&lib, b"gst_cuda_memory_sync\0").ok(),
                _lib: lib,
            })
        }
    }

    /// A `gst.cuda.context` wrapping `ctx`, to set on a pipeline before it starts: GStreamer's
    /// CUDA elements then allocate in it instead of creating their own.
    pub fn context(&self, ctx: &CudaContextRef) -> Result<gst::Context, GstCudaError> {
        // SAFETY: no arguments; loads libcuda through GStreamer's loader, idempotent.
        if unsafe { (self.load_library)() } == 0 {
            return Err(GstCudaError::NoDriver);
        }
        // SAFETY: `ctx.handle` is a live CUcontext of `ctx.device`, kept alive by `ctx.keep`
        // (which the caller holds while the pipeline runs); the wrapper does not own it.
        let wrapped = unsafe { (self.new_wrapped)(ctx.handle as *mut c_void, ctx.device) };
        if wrapped.is_null() {
            return Err(GstCudaError::Wrap { device: ctx.device });
        }
        // SAFETY: `wrapped` is a GstCudaContext we own one reference to; the GstContext
        // takes its own reference, so ours is released after.
        let context = unsafe {
            let context = (self.new_context)(wrapped);
            gst_ffi::gst_object_unref(wrapped.cast());
            context
        };
        if context.is_null() {
            return Err(GstCudaError::Wrap { device: ctx.device });
        }
        // SAFETY: a new GstContext of which we own the only reference (transfer full).
        Ok(unsafe { gst::Context::from_glib_full(context) })
    }

    /// The decoded picture in `buffer` (one `memory:CUDAMemory` memory, NV12 or I420, in
    /// `ctx`), `width` x `height` (cropped to even sides), mapped for the kernels.
    pub fn picture(
        &self,
        buffer: gst::Buffer,
        (width, height): (u32, u32),
        ctx: &CudaContextRef,
    ) -> Result<DevicePicture, GstCudaError> {
        let bad = |why: String| GstCudaError::Buffer { why };
        let raw: *mut gst_ffi::GstBuffer = buffer.to_glib_none().0;
        // SAFETY: `raw` is a live buffer we hold a reference to.
        let memories = unsafe { gst_ffi::gst_buffer_n_memory(raw) };
        if memories != 1 {
            return Err(bad(format!("{memories} memories, the CUDA branch gives one")));
        }
        // SAFETY: index 0 exists (checked); the memory lives as long as the buffer.
        let memory = unsafe { gst_ffi::gst_buffer_peek_memory(raw, 0 as c_uint) };
        // SAFETY: `memory` is a live GstMemory.
        if memory.is_null() || unsafe { (self.is_cuda_memory)(memory) } == 0 {
            return Err(bad("not in CUDA memory (`memory:CUDAMemory` was not negotiated)".into()));
        }
        let cuda = memory.cast::<CudaMemoryAbi>();
        // SAFETY: a CUDA memory is a GstCudaMemory, whose leading fields `CudaMemoryAbi`
        // mirrors; its context is a live GstCudaContext while the memory lives.
        let (found, info) = unsafe { ((self.get_handle)((*cuda).context) as usize, &(*cuda).info) };
        if found != ctx.handle {
            return Err(GstCudaError::OtherContext { found, expected: ctx.handle });
        }
        let layout = plane_layout(info, (width, height)).map_err(bad)?;
        if let Some(sync) = self.memory_sync {
            // SAFETY: `memory` is a live GstCudaMemory (checked above) of a buffer we hold.
            unsafe { sync(memory) };
        }
        let mapped = Mapped::new(buffer, memory, ctx.keep.clone()).map_err(bad)?;
        let base = mapped.address();
        Ok(DevicePicture {
            format: layout.format,
            width: width & !1,
            height: height & !1,
            luma: base + layout.offsets[0],
            chroma_u: base + layout.offsets[1],
            chroma_v: if layout.format == DeviceYuv::I420 { base + layout.offsets[2] } else { 0 },
            luma_pitch: layout.pitches[0],
            chroma_pitch: layout.pitches[1],
            context: found,
            keep: Arc::new(mapped),
        })
    }
}

/// # Safety
/// `T` must be the function-pointer type of the C symbol `name`.
unsafe fn symbol<T: Copy>(lib: &libloading::Library, name: &[u8]) -> Result<T, String> {
    // SAFETY: the caller vouches for the type.
    unsafe { lib.get::<T>(name) }.map(|s| *s).map_err(|e| e.to_string())
}

/// Where a CUDA memory's planes are, from its own video info (the pool's pitch, not the caps').
#[derive(Debug, PartialEq)]
struct PlaneLayout {
    format: DeviceYuv,
    offsets: [u64; 3],
    pitches: [usize; 3],
}

fn plane_layout(info: &video_ffi::GstVideoInfo, (width, height): (u32, u32)) -> Result<PlaneLayout, String> {
    // SAFETY: a GstVideoInfo's `finfo` is null or points at GStreamer's static format table.
    let format = unsafe { info.finfo.as_ref() }.map_or(video_ffi::GST_VIDEO_FORMAT_UNKNOWN, |f| f.format);
    let format = match format {
        video_ffi::GST_VIDEO_FORMAT_NV12 => DeviceYuv::Nv12,
        video_ffi::GST_VIDEO_FORMAT_I420 => DeviceYuv::I420,
        other => return Err(format!("video format {other} in CUDA memory, the kernels read NV12 or I420")),
    };
    if info.width < width as c_int || info.height < height as c_int || width < 2 || height < 2 {
        return Err(format!("memory holds {}x{}, the caps say {width}x{height}", info.width, info.height));
    }
    if info.stride.iter().take(3).any(|&s| s < 0) {
        return Err(format!("negative pitch in {:?}", info.stride));
    }
    if format == DeviceYuv::I420 && info.stride[1] != info.stride[2] {
        return Err(format!("I420 chroma pitches differ ({} and {})", info.stride[1], info.stride[2]));
    }
    Ok(PlaneLayout {
        format,
        offsets: [info.offset[0] as u64, info.offset[1] as u64, info.offset[2] as u64],
        pitches: [info.stride[0] as usize, info.stride[1] as usize, info.stride[2] as usize],
    })
}

/// A buffer's CUDA memory mapped for device access; unmapped when dropped.
struct Mapped {
    /// Holds the memory.
    _buffer: gst::Buffer,
    /// The CUDA context the memory is in (the wrapper GStreamer holds does not own it): the
    /// pool frees the memory in it when the buffer goes, so it is released after the buffer.
    _context: Arc<dyn Send + Sync>,
    memory: *mut gst_ffi::GstMemory,
    info: gst_ffi::GstMapInfo,
}

// SAFETY: GstMemory and GstBuffer are reference counted with atomics and may be unmapped from
// any thread; the map info is only read after the map and handed back once, in `drop`.
unsafe impl Send for Mapped {}
// SAFETY: as above; no method mutates through `&self`.
unsafe impl Sync for Mapped {}

impl Mapped {
    fn new(
        buffer: gst::Buffer,
        memory: *mut gst_ffi::GstMemory,
        context: Arc<dyn Send + Sync>,
    ) -> Result<Mapped, String> {
        // SAFETY: all-zero is the documented initial value of a GstMapInfo.
        let mut info: gst_ffi::GstMapInfo = unsafe { std::mem::zeroed() };
        // SAFETY: `memory` is a live CUDA memory of `buffer`, which we hold; GST_MAP_CUDA
        // maps it for device access (uploading a pending host write first).
        let ok = unsafe { gst_ffi::gst_memory_map(memory, &mut info, gst_ffi::GST_MAP_READ | MAP_CUDA) };
        if ok == 0 || info.data.is_null() {
            return Err("GStreamer could not map the CUDA memory for device access".into());
        }
        Ok(Mapped { _buffer: buffer, _context: context, memory, info })
    }

    /// The device address of the memory's first byte.
    fn address(&self) -> u64 {
        self.info.data as u64
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: mapped once in `new` with this info; unmapped once here.
        unsafe { gst_ffi::gst_memory_unmap(self.memory, &mut self.info) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_video as gst_video;

    /// A GstVideoInfo as GStreamer lays out `format` at `w` x `h`.
    fn raw(format: gst_video::VideoFormat, w: u32, h: u32) -> video_ffi::GstVideoInfo {
        gst::init().unwrap();
        let info = gst_video::VideoInfo::builder(format, w, h).build().unwrap();
        let ptr: *const video_ffi::GstVideoInfo = info.to_glib_none().0;
        // SAFETY: a valid GstVideoInfo borrowed from `info`, copied out (plain data).
        unsafe { *ptr }
    }

    #[test]
    fn nv12_and_i420_planes_come_from_the_memorys_own_layout() {
        let layout = plane_layout(&raw(gst_video::VideoFormat::Nv12, 64, 48), (63, 47)).unwrap();
        assert_eq!(layout.format, DeviceYuv::Nv12);
        assert_eq!((layout.offsets[1], layout.pitches[0], layout.pitches[1]), (64 * 48, 64, 64));
        let layout = plane_layout(&raw(gst_video::VideoFormat::I420, 64, 48), (64, 48)).unwrap();
        assert_eq!(layout.offsets, [0, 64 * 48, 64 * 48 + 32 * 24]);
        assert_eq!(layout.pitches, [64, 32, 32]);
    }

    #[test]
    fn other_formats_and_sizes_are_refused_by_name() {
        let err = plane_layout(&raw(gst_video::VideoFormat::Rgbx, 64, 48), (64, 48)).unwrap_err();
        assert!(err.contains("the kernels read NV12 or I420"), "{err}");
        let err = plane_layout(&raw(gst_video::VideoFormat::Nv12, 64, 48), (128, 48)).unwrap_err();
        assert!(err.contains("memory holds 64x48, the caps say 128x48"), "{err}");
    }

    /// libgstcuda ships with gst-plugins-bad 1.22 (Debian 12, which setup installs): every
    /// symbol must resolve, so a renamed entry point fails here, not on a GPU machine.
    #[test]
    fn the_library_opens_with_every_entry_point() {
        library().unwrap();
    }

    #[test]
    fn a_system_memory_buffer_is_refused_not_read() {
        let lib = library().unwrap();
        gst::init().unwrap();
        let buffer = gst::Buffer::from_mut_slice(vec![0u8; 64 * 48 * 3 / 2]);
        let ctx = CudaContextRef { handle: 1, device: 0, keep: Arc::new(()) };
        let err = lib.picture(buffer, (64, 48), &ctx).unwrap_err();
        assert!(err.to_string().contains("not in CUDA memory"), "{err}");
    }

    #[test]
    fn without_a_driver_there_is_no_cuda_branch_and_no_context() {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return;
        }
        // nvcodec registers its CUDA elements and decoders only with a working driver.
        assert!(!available());
        assert!(hardware_decoders(0).is_empty());
        // The handle is never touched: the driver check comes first.
        let ctx = CudaContextRef { handle: 1, device: 0, keep: Arc::new(()) };
        let err = library().unwrap().context(&ctx).unwrap_err();
        assert!(matches!(err, GstCudaError::NoDriver), "{err}");
    }
}
