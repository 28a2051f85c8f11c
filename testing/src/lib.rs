//! Test doubles for runyard, never linked into the shipped binary (a
//! dev-dependency only): [`MemoryCluster`], an in-memory implementation of
//! the cluster API traits with the API server's resourceVersion semantics and
//! fault injection, and [`MemoryLease`], an in-memory Lease.

pub mod lease;
pub mod memory;

pub use lease::MemoryLease;
pub use memory::{MemoryCluster, Op, RecordedEvent};
