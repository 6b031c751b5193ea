use retail_core::{Detection, TrackedObject};

use crate::{KalmanBox, TrackerConfig, assign};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Seen, not yet `min-hits` times in a row; has no id.
    Tentative,
    Tracked,
    Lost,
}

#[derive(Debug)]
struct Track {
    id: Option<u64>,
    kf: KalmanBox,
    state: State,
    hits: u32,
    lost_frames: u32,
    score: f32,
}

/// The tracker's output for one frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrameTracks {
    /// Confirmed tracks matched in this frame, with their filtered boxes.
    pub active: Vec<TrackedObject>,
    /// For each input detection, the confirmed track it was assigned to.
    pub assignments: Vec<Option<u64>>,
    /// Ids whose tracks ended in this frame (lost for longer than `max-lost-frames`).
    pub ended: Vec<u64>,
}

/// ByteTrack-class tracker for one stream; see the crate docs.
pub struct Tracker {
    config: TrackerConfig,
    high_score: f32,
    new_track_score: f32,
    tracks: Vec<Track>,
    next_id: u64,
    first_id: u64,
}

impl Tracker {
    /// `high_score` is the confident-detection threshold; detections below it are used only
    /// in the second association stage.
    pub fn new(config: TrackerConfig, high_score: f32) -> Self {
        let new_track_score = config.new_track_score.unwrap_or((high_score + 0.1).min(1.0));
        Tracker { config, high_score, new_track_score, tracks: Vec::new(), next_id: 1, first_id: 1 }
    }

    /// Hands out ids from `first_id` on (instead of 1), so that runs of one stream that
    /// follow each other (a live camera restarted or moved) never reuse an id.
    #[must_use]
    pub fn first_id(mut self, first_id: u64) -> Self {
        self.first_id = first_id.max(1);
        self.next_id = self.first_id;
        self
    }

    /// Confirmed ids handed out so far: the number of distinct people seen.
    pub fn confirmed_count(&self) -> u64 {
        self.next_id - self.first_id
    }

    /// Ids of confirmed tracks still alive (tracked or briefly lost).
    pub fn live_ids(&self) -> Vec<u64> {
        self.tracks.iter().filter_map(|t| t.id).collect()
    }

    /// Feeds one frame's detections (any order) and returns the frame's tracks.
    pub fn update(&mut self, detections: &[Detection]) -> FrameTracks {
        for t in &mut self.tracks {
            t.kf.predict();
        }
        let mut det_track: Vec<Option<usize>> = vec![None; detections.len()];
        let high: Vec<usize> = (0..detections.len()).filter(|&i| detections[i].score >= self.high_score).collect();
        let low: Vec<usize> = (0..detections.len()).filter(|&i| detections[i].score < self.high_score).collect();
        let mut matched_track = vec![false; self.tracks.len()];

        // Stage 1: confident detections vs confirmed tracks, lost ones included.
        let confirmed: Vec<usize> =
            (0..self.tracks.len()).filter(|&t| self.tracks[t].state != State::Tentative).collect();
        let unmatched_high =
            self.associate(&confirmed, &high, detections, self.config.match_iou, &mut det_track, &mut matched_track);

        // Stage 2: low-score detections vs tracks still unmatched and not lost.
        let tracked_left: Vec<usize> = confirmed
            .iter()
            .copied()
            .filter(|&t| !matched_track[t] && self.tracks[t].state == State::Tracked)
            .collect();
        self.associate(
            &tracked_left,
            &low,
            detections,
            self.config.low_score_match_iou,
            &mut det_track,
            &mut matched_track,
        );

        // Stage 3: tentative tracks vs confident detections still free.
        let tentative: Vec<usize> =
            (0..self.tracks.len()).filter(|&t| self.tracks[t].state == State::Tentative).collect();
        let fresh = self.associate(
            &tentative,
            &unmatched_high,
            detections,
            self.config.tentative_match_iou,
            &mut det_track,
            &mut matched_track,
        );

        // Apply matches.
        for (d, t) in det_track.iter().enumerate() {
            if let Some(t) = *t {
                let track = &mut self.tracks[t];
                track.kf.update(&detections[d].bbox);
                track.score = detections[d].score;
                track.hits += 1;
                track.lost_frames = 0;
                match track.state {
                    State::Tentative if track.hits >= self.config.min_hits => {
                        track.state = State::Tracked;
                        track.id = Some(self.next_id);
                        self.next_id += 1;
                    }
                    State::Lost => track.state = State::Tracked,
                    _ => {}
                }
            }
        }
        // Unmatched tracks: tentative ones die at once, confirmed ones are lost, then end.
        let mut ended = Vec::new();
        let max_lost = self.config.max_lost_frames;
        for (t, track) in self.tracks.iter_mut().enumerate() {
            if matched_track[t] {
                continue;
            }
            track.hits = 0;
            match track.state {
                State::Tentative => track.lost_frames = u32::MAX,
                _ => {
                    track.state = State::Lost;
                    track.lost_frames += 1;
                    if track.lost_frames > max_lost {
                        ended.extend(track.id);
                    }
                }
            }
        }
        let alive: Vec<bool> = self
            .tracks
            .iter()
            .map(|t| t.lost_frames == 0 || (t.state == State::Lost && t.lost_frames <= max_lost))
            .collect();

        let assignments: Vec<Option<u64>> = det_track.iter().map(|t| t.and_then(|t| self.tracks[t].id)).collect();
        let active = self
            .tracks
            .iter()
            .zip(&matched_track)
            .filter(|(t, m)| **m && t.state == State::Tracked)
            .filter_map(|(t, _)| Some(TrackedObject { track_id: t.id?, bbox: t.kf.bbox(), score: t.score }))
            .collect();

        let mut keep = alive.into_iter();
        self.tracks.retain(|_| keep.next().unwrap_or(false));

        // Births: confident detections nobody claimed.
        for d in fresh {
            if detections[d].score >= self.new_track_score {
                let confirmed_now = self.config.min_hits <= 1;
                let id = confirmed_now.then(|| {
                    self.next_id += 1;
                    self.next_id - 1
                });
                self.tracks.push(Track {
                    id,
                    kf: KalmanBox::new(&detections[d].bbox),
                    state: if confirmed_now { State::Tracked } else { State::Tentative },
                    hits: 1,
                    lost_frames: 0,
                    score: detections[d].score,
                });
            }
        }
        FrameTracks { active, assignments, ended }
    }

    /// Ends every live track (end of stream) and returns their ids.
    pub fn finish(&mut self) -> Vec<u64> {
        self.tracks.drain(..).filter_map(|t| t.id).collect()
    }

    /// Matches `tracks` to `dets` by IoU of predicted boxes; returns the detections left over.
    fn associate(
        &self,
        tracks: &[usize],
        dets: &[usize],
        detections: &[Detection],
        min_iou: f32,
        det_track: &mut [Option<usize>],
        matched_track: &mut [bool],
    ) -> Vec<usize> {
        let predicted: Vec<_> = tracks.iter().map(|&t| self.tracks[t].kf.bbox()).collect();
        let cost: Vec<Vec<f32>> =
            predicted.iter().map(|p| dets.iter().map(|&d| 1.0 - p.iou(&detections[d].bbox)).collect()).collect();
        let mut taken = vec![false; dets.len()];
        for (ti, di) in assign(&cost, 1.0 - min_iou) {
            det_track[dets[di]] = Some(tracks[ti]);
            matched_track[tracks[ti]] = true;
            taken[di] = true;
        }
        dets.iter().zip(taken).filter(|(_, t)| !t).map(|(d, _)| *d).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retail_core::BBox;

    fn det(x: f32, y: f32, score: f32) -> Detection {
        Detection { bbox: BBox::new(x, y, x + 0.06, y + 0.2), score, class: 0 }
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig::default(), 0.35)
    }

    #[test]
    fn id_survives_three_frame_gap() {
        let mut t = tracker();
        let mut id = None;
        for f in 0..20 {
            let x = 0.1 + 0.01 * f as f32;
            let dets = if (10..13).contains(&f) { vec![] } else { vec![det(x, 0.4, 0.8)] };
            let out = t.update(&dets);
            if f >= 2 && !dets.is_empty() {
                assert_eq!(out.active.len(), 1, "frame {f}");
                let got = out.active[0].track_id;
                assert_eq!(*id.get_or_insert(got), got, "id changed at frame {f}");
            }
            assert!(out.ended.is_empty());
        }
        assert_eq!(t.confirmed_count(), 1);
    }

    #[test]
    fn crossing_tracks_keep_their_ids() {
        let mut t = tracker();
        let mut ids: Option<(u64, u64)> = None;
        for f in 0..40 {
            // A walks right, B walks left, slightly lower; they overlap around frame 20.
            let a = det(0.1 + 0.02 * f as f32, 0.40, 0.9);
            let b = det(0.9 - 0.02 * f as f32, 0.43, 0.7);
            let out = t.update(&[a, b]);
            if f < 3 {
                continue;
            }
            assert_eq!(out.active.len(), 2, "frame {f}");
            let id_of = |d: &Detection| {
                out.active.iter().min_by(|p, q| {
                    let dp = (p.bbox.x1 - d.bbox.x1).abs() + (p.bbox.y1 - d.bbox.y1).abs();
                    let dq = (q.bbox.x1 - d.bbox.x1).abs() + (q.bbox.y1 - d.bbox.y1).abs();
                    dp.total_cmp(&dq)
                })
            };
            let (ia, ib) = (out.assignments[0].unwrap(), out.assignments[1].unwrap());
            assert_ne!(ia, ib);
            let want = *ids.get_or_insert((ia, ib));
            assert_eq!((ia, ib), want, "id switch at frame {f}");
            assert!(id_of(&a).is_some());
        }
        assert_eq!(t.confirmed_count(), 2);
    }

    #[test]
    fn one_frame_false_positive_gets_no_id() {
        let mut t = tracker();
        let out = t.update(&[det(0.5, 0.5, 0.9)]);
        assert!(out.active.is_empty());
        for _ in 0..5 {
            t.update(&[]);
        }
        assert_eq!(t.confirmed_count(), 0);
    }

    #[test]
    fn low_score_detection_keeps_track_alive() {
        let mut t = tracker();
        for f in 0..5 {
            t.update(&[det(0.2 + 0.01 * f as f32, 0.3, 0.9)]);
        }
        // Partly occluded: the detector is unsure, but it is the same person.
        let out = t.update(&[det(0.25, 0.3, 0.2)]);
        assert_eq!(out.active.len(), 1);
        assert_eq!(out.assignments, vec![Some(1)]);
        // A low-score detection alone never starts a track.
        let mut t2 = tracker();
        for _ in 0..5 {
            t2.update(&[det(0.5, 0.5, 0.2)]);
        }
        assert_eq!(t2.confirmed_count(), 0);
    }

    #[test]
    fn track_ends_after_max_lost_frames() {
        let config = TrackerConfig { max_lost_frames: 4, ..TrackerConfig::default() };
        let mut t = Tracker::new(config, 0.35);
        for _ in 0..3 {
            t.update(&[det(0.5, 0.5, 0.9)]);
        }
        let mut ended_at = None;
        for f in 1..=6 {
            let out = t.update(&[]);
            if !out.ended.is_empty() {
                assert_eq!(out.ended, vec![1]);
                ended_at = Some(f);
            }
        }
        assert_eq!(ended_at, Some(5));
        assert!(t.live_ids().is_empty());
    }

    #[test]
    fn ids_start_where_told_and_people_are_still_counted_from_zero() {
        let mut t = Tracker::new(TrackerConfig::default(), 0.35).first_id(1_000_000);
        for _ in 0..3 {
            t.update(&[det(0.4, 0.4, 0.9)]);
        }
        assert_eq!(t.live_ids(), vec![1_000_000]);
        assert_eq!(t.confirmed_count(), 1);
    }
}
