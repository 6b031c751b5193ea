//! `detector.backend = "tensorrt"` where TensorRT cannot run: an error that says what is
//! missing, never a session that quietly runs on the CPU. This machine's ONNX Runtime is the
//! CPU build, so with feature `tensorrt` the provider is missing, and without it the build is.

use retail_infer::{Accelerator, Detector, InferError, Manifest, Precision, TensorRtOptions};

#[test]
fn tensorrt_where_it_cannot_run_is_an_error_naming_what_is_missing() {
    retail_infer::init_runtime(None).unwrap();
    let manifest = Manifest::bundled();
    let model = manifest.resolve_model(None, None, Precision::Fp32).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let gpu =
        Accelerator::TensorRt(TensorRtOptions { engine_cache: cache.path().join("engines"), ..Default::default() });
    let person = vec![manifest.labels.person];
    let err = match Detector::load_on(&manifest, &model, 1, person.clone(), (0.3, 0.5), &gpu) {
        Ok(d) => panic!("a {} session on a machine without TensorRT", d.backend_name()),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(matches!(err, InferError::Accelerator { provider: "TensorRT", .. }), "{err:?}");
    assert!(text.contains("detector.backend"), "{text}");
    let why = if cfg!(feature = "tensorrt") { "no TensorRT execution provider" } else { "--features tensorrt" };
    assert!(text.contains(why), "{text}");

    // The CPU session from the same file and manifest is what the default backend is.
    let cpu = Detector::load_on(&manifest, &model, 1, person, (0.3, 0.5), &Accelerator::Cpu).unwrap();
    assert_eq!(cpu.backend_name(), "onnxruntime-cpu");
}
