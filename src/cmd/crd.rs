//! `runyard crd`.

use anyhow::{Context, Result};

/// `runyard crd`.
pub(super) fn run() -> Result<String> {
    crate::crd::crds_yaml().context("serialising the CRDs")
}
