use retail_core::Detection;

/// Greedy non-maximum suppression per class: keeps the best-scoring box and drops others of
/// the same class overlapping it by more than `iou_threshold`. Output is sorted by score.
pub fn nms(mut candidates: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(candidates.len().min(64));
    for c in candidates {
        if kept.iter().all(|k| k.class != c.class || k.bbox.iou(&c.bbox) <= iou_threshold) {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use retail_core::BBox;

    fn det(x: f32, score: f32, class: u32) -> Detection {
        Detection { bbox: BBox::new(x, 0.0, x + 0.2, 0.4), score, class }
    }

    #[test]
    fn keeps_best_of_overlapping_and_all_of_disjoint() {
        let out = nms(vec![det(0.0, 0.6, 0), det(0.02, 0.9, 0), det(0.5, 0.4, 0)], 0.5);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        assert_eq!(out[1].score, 0.4);
    }

    #[test]
    fn other_classes_do_not_suppress() {
        let out = nms(vec![det(0.0, 0.6, 0), det(0.0, 0.9, 1)], 0.5);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn threshold_is_respected() {
        // IoU of boxes shifted by 0.1 of a 0.2-wide box is 1/3.
        let pair = vec![det(0.0, 0.9, 0), det(0.1, 0.8, 0)];
        assert_eq!(nms(pair.clone(), 0.3).len(), 1);
        assert_eq!(nms(pair, 0.4).len(), 2);
    }

    #[test]
    fn empty_is_empty() {
        assert!(nms(Vec::new(), 0.5).is_empty());
    }
}
