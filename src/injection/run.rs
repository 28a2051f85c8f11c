//! Jobs and Pods as runs: one trait for what the engine does to each kind.
//!
//! A Job at CREATE is queued (`spec.suspend: true`), stamped with a run id (on
//! the Job and its pod template) and its pod template is injected exactly as
//! its pods will run. A Pod is injected at creation; a bare one (not
//! controlled by a Job) is gated until it is claimed. Nothing on the object is
//! trusted: a pod from an injected template is injected again (which changes
//! nothing), and the worker label and the controller's annotations are
//! removed unless the controller (or, for a Job's pods, the Job controller)
//! sends the request (see [`super::trust`]).

use super::trust::{self, Requester};
use super::{patch, pod, set_label, InjectError, Injector};
use crate::crd::WorkerPoolSpec;
use crate::vocab::{controlled_by_job, label, LABEL_POOL, LABEL_RUN_ID, LABEL_WORKER};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One run being injected: the engine, the run's pool, and who asked.
pub struct Run<'a> {
    pub engine: &'a Injector,
    pub pool_name: &'a str,
    pub pool: &'a WorkerPoolSpec,
    pub requester: Requester,
}

impl Run<'_> {
    /// The object's run id if it is well-formed, else a fresh one.
    fn run_id(&self, existing: Option<&str>) -> String {
        existing
            .filter(|id| trust::valid_run_id(id))
            .map(str::to_string)
            .unwrap_or_else(|| self.engine.new_run_id())
    }

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

    /// The pod spec runyard injects (a Pod's, a Job's template's).
    fn pod_spec(&self) -> Option<&PodSpec>;
    fn pod_spec_mut(&mut self) -> Option<&mut PodSpec>;

    /// A Job's pod template metadata (a Pod has none besides its own).
    fn template_meta(&self) -> Option<&ObjectMeta> {
        None
    }

    /// The object without `managedFields`: they are large and never patched,
    /// so they stay out of the diff, and the patch still applies to the object
    /// as the API server holds it.
    fn without_managed_fields(mut self) -> Self {
        self.clear_managed_fields();
        self
    }

    /// [`Self::without_managed_fields`] in place.
    fn clear_managed_fields(&mut self) {
        self.meta_mut().managed_fields = None;
    }

    /// Injects the run environment in place (CREATE).
    fn inject(&mut self, run: &Run<'_>) -> Result<(), InjectError>;

    /// Reviews an UPDATE by anyone but the controller.
    fn review_update(
        old: &Self,
        new: &Self,
        pool_name: &str,
        pool: Option<&WorkerPoolSpec>,
    ) -> Result<(), InjectError>;

    /// The JSON Patch from `old` to `new` (`old` is left emptied in part:
    /// it is dropped after).
    fn diff(old: &mut Self, new: &mut Self) -> Result<patch::JsonPatch, patch::SerError>;
}

impl RunObject for Job {
    const KIND: &'static str = "Job";

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref().and_then(|s| s.template.spec.as_ref())
    }
    fn pod_spec_mut(&mut self) -> Option<&mut PodSpec> {
        self.spec.as_mut().and_then(|s| s.template.spec.as_mut())
    }
    fn template_meta(&self) -> Option<&ObjectMeta> {
        self.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
    }

    #[inline(never)]
    fn inject(&mut self, run: &Run<'_>) -> Result<(), InjectError> {
        let pool_name = run.pool_name;
        let controller = run.requester == Requester::Controller;
        if !controller {
            trust::scrub(&mut self.metadata);
        }
        let spec = self
            .spec
            .as_mut()
            .ok_or_else(|| InjectError::Invalid("the Job has no spec".into()))?;
        let template_meta = spec.template.metadata.get_or_insert_with(Default::default);
        if !controller {
            trust::scrub(template_meta);
        }
        if let Some(t) = label(template_meta, LABEL_POOL) {
            if t != pool_name {
                return Err(InjectError::PoolLabelMismatch {
                    job: pool_name.to_string(),
                    template: t.to_string(),
                });
            }
        }
        let run_id = run.run_id(
            label(&self.metadata, LABEL_RUN_ID).or_else(|| label(template_meta, LABEL_RUN_ID)),
        );
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

    fn review_update(
        old: &Self,
        new: &Self,
        pool_name: &str,
        _pool: Option<&WorkerPoolSpec>,
    ) -> Result<(), InjectError> {
        trust::review_job_update(old, new, pool_name)
    }

    fn diff(old: &mut Self, new: &mut Self) -> Result<patch::JsonPatch, patch::SerError> {
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
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()
    }
    fn pod_spec_mut(&mut self) -> Option<&mut PodSpec> {
        self.spec.as_mut()
    }

    #[inline(never)]
    fn inject(&mut self, run: &Run<'_>) -> Result<(), InjectError> {
        let from_template = controlled_by_job(&self.metadata);
        // A Job's pods come from its template, which the Job webhook queued
        // and guards: their labels are the template's. Only the Job controller
        // creates them.
        let trusted =
            match (from_template, run.requester) {
                (true, Requester::JobController | Requester::Controller) => true,
                (true, Requester::User) => return Err(InjectError::ControllerOwned {
                    what:
                        "creating a run Pod controlled by a Job (the Job controller creates those)"
                            .into(),
                    pool: run.pool_name.to_string(),
                }),
                (false, Requester::Controller) => true,
                (false, _) => false,
            };
        if !trusted {
            trust::scrub(&mut self.metadata);
        }
        let run_id = run.run_id(label(&self.metadata, LABEL_RUN_ID));
        let claimed = label(&self.metadata, LABEL_WORKER).is_some();
        let gate = !from_template && !claimed;
        set_label(&mut self.metadata, LABEL_RUN_ID, &run_id);
        let spec = self.spec.get_or_insert_with(Default::default);
        pod::inject(&mut self.metadata, spec, &run.pod_context(&run_id, gate))
    }

    fn review_update(
        old: &Self,
        new: &Self,
        pool_name: &str,
        pool: Option<&WorkerPoolSpec>,
    ) -> Result<(), InjectError> {
        trust::review_pod_update(old, new, pool_name, pool)
    }

    fn diff(old: &mut Self, new: &mut Self) -> Result<patch::JsonPatch, patch::SerError> {
        patch::diff_pod(old, new)
    }
}
