//! Which decoders a pipeline's `decodebin` (or `uridecodebin`) plugs, and what counts as a
//! fault of the GPU's decoding, after which a source goes on on the CPU
//! ([`crate::SourceSpec::on_cpu`]).

use gstreamer as gst;
use gstreamer::prelude::*;

/// The plugin of NVDEC's decoders and of GStreamer's CUDA elements.
const GPU_PLUGIN: &str = "nvcodec";

/// Makes `decodebin` try `preferred` decoders (factory names) first for a format they take,
/// whatever the ranks say; for this pipeline only. The others stay in the list after them,
/// so a preferred decoder that fails to start falls back as decodebin does.
// Only the CUDA branch (feature `cuda`) uses it outside the tests.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn prefer_decoders(decodebin: &gst::Element, preferred: &[String]) {
    let preferred: Vec<String> = preferred.iter().filter(|n| gst::ElementFactory::find(n).is_some()).cloned().collect();
    if !preferred.is_empty() {
        on_autoplug_sort(decodebin, move |factories| preferred_first(factories, &preferred));
    }
}

/// Keeps the GPU's decoders (nvcodec's) out of `decodebin`'s choice, for this pipeline only:
/// nvcodec ranks them above the software decoders, and they can hand on system memory, so
/// the CPU's decoding after a GPU fault would otherwise plug them again.
pub(crate) fn software_decoders_only(decodebin: &gst::Element) {
    leave_out_plugin(decodebin, GPU_PLUGIN);
}

fn leave_out_plugin(decodebin: &gst::Element, plugin: &'static str) {
    on_autoplug_sort(decodebin, move |factories| without_plugin(factories, plugin));
}

/// Lets `sort` reorder (or shorten) the factories `decodebin` is about to try; `None` keeps
/// decodebin's own list.
fn on_autoplug_sort(
    decodebin: &gst::Element,
    sort: impl Fn(&gst::glib::ValueArray) -> Option<gst::glib::ValueArray> + Send + Sync + 'static,
) {
    decodebin.connect("autoplug-sort", false, move |args| {
        let factories = args.get(3).and_then(|v| v.get::<gst::glib::ValueArray>().ok());
        // NULL keeps decodebin's own order.
        Some(factories.and_then(|f| sort(&f)).to_value())
    });
}

fn factories_of(list: &gst::glib::ValueArray) -> Option<Vec<gst::ElementFactory>> {
    let all: Vec<gst::ElementFactory> = list.iter().filter_map(|v| v.get().ok()).collect();
    (all.len() == list.len()).then_some(all)
}

/// `factories` with the `preferred` ones moved to the front (order otherwise kept), or `None`
/// when none of them is in the list.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn preferred_first(factories: &gst::glib::ValueArray, preferred: &[String]) -> Option<gst::glib::ValueArray> {
    let all = factories_of(factories)?;
    let is_preferred = |f: &gst::ElementFactory| preferred.iter().any(|p| f.name() == p.as_str());
    if !all.iter().any(is_preferred) {
        return None;
    }
    let (mut first, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(is_preferred);
    first.extend(rest);
    Some(gst::glib::ValueArray::new(first))
}

/// `factories` without those of `plugin`, or `None` when it has none. An empty list makes
/// decodebin report the format as one it has no decoder for.
fn without_plugin(factories: &gst::glib::ValueArray, plugin: &str) -> Option<gst::glib::ValueArray> {
    let all = factories_of(factories)?;
    let of_plugin = |f: &gst::ElementFactory| f.plugin_name().as_deref() == Some(plugin);
    if !all.iter().any(of_plugin) {
        return None;
    }
    Some(gst::glib::ValueArray::new(all.into_iter().filter(|f| !of_plugin(f))))
}

/// Whether GStreamer's error is a fault of the GPU's decoding in `pipeline`: see
/// [`is_gpu_fault`].
pub(crate) fn gpu_fault(err: &gst::message::Error, pipeline: &gst::Pipeline) -> bool {
    is_gpu_fault(err, || {
        pipeline.iterate_recurse().into_iter().filter_map(Result::ok).any(|e| from_plugin(&e, GPU_PLUGIN))
    })
}

/// An error of an nvcodec element (NVDEC's decoders, `cudaupload`, `cudaconvert`), or a
/// stream stopped unnegotiated in a pipeline with nvcodec elements: an NVDEC that cannot
/// open its session (out of sessions or memory) only logs it and refuses the caps, so the
/// error comes from the demuxer; so does a format the CUDA elements do not take. Both are
/// decoded on the CPU.
fn is_gpu_fault(err: &gst::message::Error, gpu_in_pipeline: impl FnOnce() -> bool) -> bool {
    let from_gpu = err.src().and_then(|s| s.downcast_ref::<gst::Element>()).is_some_and(|e| from_plugin(e, GPU_PLUGIN));
    let unnegotiated = err.debug().is_some_and(|d| d.contains("not-negotiated"));
    from_gpu || (unnegotiated && gpu_in_pipeline())
}

fn from_plugin(element: &gst::Element, plugin: &str) -> bool {
    element.factory().is_some_and(|f| f.plugin_name().as_deref() == Some(plugin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::make_clip;
    use std::path::Path;

    /// The decoders `decodebin` plugs for `path`, after `setup` had its say.
    fn decoders_used(path: &Path, setup: impl Fn(&gst::Element)) -> Vec<String> {
        let desc = format!("filesrc location={} ! decodebin name=dec ! fakesink name=sink", path.display());
        let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
        let dec = pipeline.by_name("dec").unwrap();
        setup(&dec);
        pipeline.set_state(gst::State::Paused).unwrap();
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::AsyncDone, gst::MessageType::Error],
            )
            .unwrap();
        assert!(matches!(msg.view(), gst::MessageView::AsyncDone(_)), "{msg:?}");
        let bin = dec.downcast::<gst::Bin>().unwrap();
        let names = bin
            .iterate_recurse()
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.factory().map(|f| f.name().to_string()))
            .collect();
        pipeline.set_state(gst::State::Null).unwrap();
        names
    }

    fn factory_names(list: &gst::glib::ValueArray) -> Vec<String> {
        list.iter().map(|v| v.get::<gst::ElementFactory>().unwrap().name().to_string()).collect()
    }

    /// The CUDA branch makes `decodebin` try the NVDEC decoders first whatever their rank, and
    /// the CPU's decoding after a GPU fault leaves nvcodec's out; both mechanisms checked here
    /// with two CPU decoders of JPEG: `avdec_mjpeg` (libav, marginal rank) is plugged before
    /// `jpegdec` (jpeg, primary) when it is preferred, or when the jpeg plugin is left out.
    #[test]
    fn decoders_are_preferred_or_left_out_per_pipeline() {
        crate::init().unwrap();
        if gst::ElementFactory::find("avdec_mjpeg").is_none() || gst::ElementFactory::find("jpegdec").is_none() {
            return;
        }
        let (dir, clip) = make_clip(
            "prefer",
            "mjpeg.avi",
            "videotestsrc num-buffers=2 ! video/x-raw,width=64,height=48 ! jpegenc ! avimux",
        );
        let by_rank = decoders_used(&clip, |_| {});
        assert!(by_rank.contains(&"jpegdec".to_owned()), "{by_rank:?}");
        let preferred =
            decoders_used(&clip, |d| prefer_decoders(d, &["avdec_mjpeg".to_owned(), "no-such-decoder".to_owned()]));
        assert!(
            preferred.contains(&"avdec_mjpeg".to_owned()) && !preferred.contains(&"jpegdec".to_owned()),
            "{preferred:?}"
        );
        let left_out = decoders_used(&clip, |d| leave_out_plugin(d, "jpeg"));
        assert!(
            left_out.contains(&"avdec_mjpeg".to_owned()) && !left_out.contains(&"jpegdec".to_owned()),
            "{left_out:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // The others stay behind the preferred ones, for decodebin's fallback.
        let list =
            gst::glib::ValueArray::new(["jpegdec", "avdec_mjpeg"].map(|n| gst::ElementFactory::find(n).unwrap()));
        let sorted = preferred_first(&list, &["avdec_mjpeg".to_owned()]).unwrap();
        assert_eq!(factory_names(&sorted), ["avdec_mjpeg", "jpegdec"]);
        assert!(preferred_first(&list, &["nvh264dec".to_owned()]).is_none(), "no preferred one: decodebin's order");
        assert_eq!(factory_names(&without_plugin(&list, "libav").unwrap()), ["jpegdec"]);
        assert!(without_plugin(&list, GPU_PLUGIN).is_none(), "nothing to leave out: decodebin's list");
    }

    fn error(kind: gst::StreamError, debug: &str) -> gst::Message {
        let demuxer = gst::ElementFactory::make("identity").build().unwrap();
        gst::message::Error::builder(kind, "Internal data stream error.").src(&demuxer).debug(debug).build()
    }

    /// A stream stopped unnegotiated is the GPU's fault only in a pipeline with nvcodec
    /// elements (NVDEC that cannot open a session says so that way); other errors of CPU
    /// elements never are.
    #[test]
    fn what_counts_as_a_fault_of_the_gpus_decoding() {
        crate::init().unwrap();
        let check = |msg: gst::Message, gpu_in_pipeline: bool| {
            let gst::MessageView::Error(err) = msg.view() else { unreachable!() };
            is_gpu_fault(err, || gpu_in_pipeline)
        };
        let unnegotiated = "streaming stopped, reason not-negotiated (-4)";
        assert!(check(error(gst::StreamError::Failed, unnegotiated), true));
        assert!(!check(error(gst::StreamError::Failed, unnegotiated), false));
        assert!(!check(error(gst::StreamError::Decode, "corrupt slice"), true));
        let pipeline = gst::parse::launch("videotestsrc ! identity ! fakesink").unwrap().downcast().unwrap();
        let msg = error(gst::StreamError::Failed, unnegotiated);
        let gst::MessageView::Error(err) = msg.view() else { unreachable!() };
        assert!(!gpu_fault(err, &pipeline), "no nvcodec element in this pipeline");
    }
}
