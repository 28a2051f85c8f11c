//! runyard: plain Kubernetes Jobs and Pods as managed runs on a worker pool.
//!
//! Pure logic (the injection engine, the CRD types) lives apart from I/O (the
//! webhook server, the CLI), so most behaviour is tested without a network.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod certs;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod inject;
pub mod injection;
pub mod launcher;
pub mod pools;
pub mod status;
pub mod submit;
pub mod webhook;
