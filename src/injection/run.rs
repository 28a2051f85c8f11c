//! Jobs and Pods as runs: one trait for what the engine does to each kind.
//!
//! A Job at CREATE is queued (`spec.suspend: true` unless claimed), stamped
//! with a run id (on the Job and its pod template) and its pod template is
//! injected exactly as its pods will run. A Pod is injected at creation; a bare
//! one (not controlled by a Job) is gated until it is claimed; a Pod from an
//! injected template passes through unchanged after the pool's policy is
//! checked.

use super::{patch, pod, set_label, InjectError, Injector};
use crate::crd::WorkerPoolSpec;
use crate::vocab::{controlled_by_job, is_injected, label, LABEL_POOL, LABEL_RUN_ID, LABEL_WORKER};
use json_patch::Patch;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One run being injected: the engine and the run's pool.
pub struct Run<'a> {
    pub engine: &'a Injector,
    pub pool_name: &'a str,
    pub pool: &'a WorkerPoolSpec,
}

impl Run<'_> {
    fn pod_context<'b>(&'b self, run_id: &'b str, gate: bool) -> pod::PodContext<'b> {
        pod::PodContext {
            pool_name: self.pool_name,
            pool: self.pool,
            run_id,
            facts: self.engine.facts,
            gate,
            defaults: &self.engine.defaults,
        }
    }
}

/// A kind of run object (Job or Pod).
pub trait RunObject:
    Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// `Job` or `Pod`.
    const KIND: &'static str;

    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// The object without `managedFields`: they are large and never patched,
    /// so they stay out of the diff, and the patch still applies to the object
    /// as the API server holds it.
    fn without_managed_fields(mut self) -> Self {
        self.meta_mut().managed_fields = None;
        self
    }

    /// Whether the object needs no injection at all (checked before copying it).
    fn passes_through(&self, _run: &Run<'_>) -> Result<bool, InjectError> {
        Ok(false)
    }

    /// Injects the run environment in place.
    fn inject(&mut self, run: &Run<'_>) -> Result<(), InjectError>;

    /// The JSON Patch from `old` to `new`.
    fn diff(old: Self, new: &mut Self) -> Result<Patch, patch::SerError>;
}

impl RunObject for Job {
    const KIND: &'static str = "Job";

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn inject(&mut self, run: &Run<'_>) -> Result<(), InjectError> {
        let pool_name = run.pool_name;
        let spec = self
            .spec
            .as_mut()
            .ok_or_else(|| InjectError::Invalid("the Job has no spec".into()))?;
        let template_meta = spec.template.metadata.get_or_insert_with(Default::default);
        if let Some(t) = label(template_meta, LABEL_POOL) {
            if t != pool_name {
                return Err(InjectError::PoolLabelMismatch {
                    job: pool_name.to_string(),
                    template: t.to_string(),
                });
            }
        }
        let run_id = label(&self.metadata, LABEL_RUN_ID)
            .or_else(|| label(template_meta, LABEL_RUN_ID))
            .map(str::to_string)
            .unwrap_or_else(|| run.engine.new_run_id());
        let claimed = label(&self.metadata, LABEL_WORKER).is_some()
            || label(template_meta, LABEL_WORKER).is_some();
        if !claimed {
            spec.suspend = Some(true);
        }
        set_label(template_meta, LABEL_POOL, pool_name);
        set_label(template_meta, LABEL_RUN_ID, &run_id);
        let pod_spec = spec
            .template
            .spec
            .as_mut()
            .ok_or_else(|| InjectError::Invalid("the Job's pod template has no spec".into()))?;
        pod::inject(template_meta, pod_spec, &run.pod_context(&run_id, false))?;
        set_label(&mut self.metadata, LABEL_RUN_ID, &run_id);
        Ok(())
    }

    fn diff(old: Self, new: &mut Self) -> Result<Patch, patch::SerError> {
        patch::diff_job(old, new)
    }
}

impl RunObject for Pod {
    const KIND: &'static str = "Pod";

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn passes_through(&self, run: &Run<'_>) -> Result<bool, InjectError> {
        let spec = self
            .spec
            .as_ref()
            .ok_or_else(|| InjectError::Invalid("the Pod has no spec".into()))?;
        if !is_injected(&self.metadata) {
            return Ok(false);
        }
        pod::check_policy(run.pool_name, run.pool, spec, &run.engine.defaults)?;
        Ok(true)
    }

    fn inject(&mut self, run: &Run<'_>) -> Result<(), InjectError> {
        let run_id = label(&self.metadata, LABEL_RUN_ID)
            .map(str::to_string)
            .unwrap_or_else(|| run.engine.new_run_id());
        let claimed = label(&self.metadata, LABEL_WORKER).is_some();
        let gate = !controlled_by_job(&self.metadata) && !claimed;
        set_label(&mut self.metadata, LABEL_RUN_ID, &run_id);
        let spec = self.spec.get_or_insert_with(Default::default);
        pod::inject(&mut self.metadata, spec, &run.pod_context(&run_id, gate))
    }

    fn diff(old: Self, new: &mut Self) -> Result<Patch, patch::SerError> {
        patch::diff_pod(old, new)
    }
}
