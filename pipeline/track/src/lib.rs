//! A ByteTrack-class multi-object tracker.
//!
//! Each track's box is predicted by a constant-velocity Kalman filter on (centre x, centre y,
//! aspect, height). Association runs in two stages, as in ByteTrack: confident detections
//! against all tracks (including recently lost ones), then the low-score detections that
//! other trackers throw away against tracks still unmatched — that is what keeps ids through
//! partial occlusion. A track is born after `min-hits` consecutive matches (a one-frame false
//! positive never gets an id) and dies after `max-lost-frames` frames unseen.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]

mod assign;
mod config;
mod kalman;
mod tracker;

pub use assign::{assign, hungarian};
pub use config::TrackerConfig;
pub use kalman::KalmanBox;
pub use tracker::{FrameTracks, Tracker};
