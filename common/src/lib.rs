//! Plumbing the three binaries share, kept apart from `model` (which does no IO and knows
//! nothing of etcd's client): how each of them reaches etcd, and the host name.
#![forbid(unsafe_code)]

pub mod etcd;
pub mod host;
