//! The vocabulary every other crate shares: one newtype ID per resource, the resources
//! themselves, request bodies and the API's error and page shapes.
//!
//! This crate does no IO and holds no business rules beyond the pure checks that both the
//! CLI and the server must agree on (what a valid name looks like). Everything here is
//! serialisable and described for the OpenAPI document.

pub mod alerts;
pub mod audit;
pub mod backups;
pub mod clusters;
pub mod dcs;
pub mod hosts;
pub mod ids;
pub mod metrics;
pub mod names;
pub mod operations;
pub mod page;
pub mod resources;
pub mod users;

pub use alerts::*;
pub use backups::*;
pub use clusters::*;
pub use dcs::{DcsMemberStatus, DcsState, DcsStatus, LocationDetail};
pub use hosts::{DiskUsage, HostFacts, MetricsSnapshot, NetCounters};
pub use ids::*;
pub use metrics::{
    MetricKind, MetricSample, MetricSeries, MetricValue, MetricsQuery, MetricsQueryResult, PrometheusTargetGroup,
};
pub use operations::*;
pub use page::{Page, PageError, PageParams, PageRequest};
pub use resources::*;
pub use users::*;

/// The body of every error the API returns, whatever the status.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code (`not_found`, `invalid_request`, `conflict`, ...).
    pub code: String,
    /// What went wrong and what to do about it, for a person.
    pub message: String,
    /// The request's ID, also in the `x-request-id` header and the server log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An error and its causes on one line (`what: why: deeper why`), skipping a cause whose
/// text the line already holds (many errors repeat their source's message).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = s.source();
    }
    text
}
