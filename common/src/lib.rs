//! Plumbing the three binaries share, kept apart from `model` (which does no IO and knows
//! nothing of etcd's client): today, how each of them reaches etcd.
#![forbid(unsafe_code)]

pub mod etcd;
