//! runyard: plain Kubernetes Jobs and Pods as managed runs on a worker pool.
//!
//! The modules follow the product: the vocabulary and CRD types; the pure
//! injection engine and the webhook around it; the cluster API; the
//! controller (a pure model, the writes, the runtime); the CLI clients; the
//! launcher inside run pods; and one module per subcommand. Pure logic lives
//! apart from I/O, so most behaviour is tested without a network; the README's
//! "Code map" lists what each module may import, and `tests/layout.rs` keeps
//! it that way.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod certs;
pub mod client;
pub mod cluster;
pub mod cmd;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod http;
pub mod injection;
pub mod launcher;
pub mod shutdown;
pub mod vocab;
pub mod webhook;
