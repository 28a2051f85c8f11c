//! Test doubles for runyard, never linked into the shipped binary (a
//! dev-dependency only).

pub mod apiserver;
