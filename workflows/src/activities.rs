//! The activity contract of [`crate::PublishPostWorkflow`]: names and types only.
//!
//! Declaring the activities here (instead of importing the implementations) keeps this crate free
//! of IO dependencies; `#[activity(definition = ..)]` on the implementations makes the compiler
//! check that both sides agree on input and output types.

#![allow(unreachable_pub)]

use temporalio_macros::activity_definitions;
use temporalio_sdk::activities::ActivityError;

use crate::types::{
    ArmOutcome, ArmRequest, AttemptOutcome, Claimant, FenceClaim, FirstCommentRequest, JobTransition, PreflightReport, PreflightRequest,
    PublishRequest,
};

pub struct PublishActivities;

#[activity_definitions]
impl PublishActivities {
    /// Checks that the account, its token and the media are usable. Makes no publish call.
    #[activity(name = "preflight")]
    pub fn preflight(request: PreflightRequest) -> Result<PreflightReport, ActivityError> {
        unimplemented!()
    }

    /// One publish attempt against the platform. Idempotent per (job, attempt): a re-execution
    /// resolves what an earlier execution left behind before it calls the platform again.
    #[activity(name = "publish")]
    pub fn publish(request: PublishRequest) -> Result<AttemptOutcome, ActivityError> {
        unimplemented!()
    }

    /// The armed phase of a publish: preflight, everything the platform lets us prepare, then at
    /// `publish_at` (the worker's clock) the job's fence and the one publishing call. Idempotent
    /// like `publish`; a command that claimed the fence first disarms it.
    #[activity(name = "arm")]
    pub fn arm(request: ArmRequest) -> Result<ArmOutcome, ActivityError> {
        unimplemented!()
    }

    /// Claims the job's fence for one arming (run as a local activity by a command's update
    /// handler) and answers who holds it.
    #[activity(name = "claim_fence")]
    pub fn claim_fence(claim: FenceClaim) -> Result<Claimant, ActivityError> {
        unimplemented!()
    }

    /// Posts a live post's first comment, once. Its failure is recorded on the job as a warning,
    /// never as the job's error: the post is published either way.
    #[activity(name = "first_comment")]
    pub fn first_comment(request: FirstCommentRequest) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Mirrors a job transition into Postgres, where the API reads it.
    #[activity(name = "mirror_transition")]
    pub fn mirror_transition(transition: JobTransition) -> Result<(), ActivityError> {
        unimplemented!()
    }
}

/// Marker types of the activities above, for `#[activity(definition = ..)]` in the worker crate
/// (the macro generates them in a private module).
pub use publish_activities::{Arm, ClaimFence, FirstComment, MirrorTransition, Preflight, Publish};
