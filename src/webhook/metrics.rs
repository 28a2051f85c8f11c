//! Prometheus metrics of the webhook (prometheus-client: typed label sets, no
//! global registry).

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub kind: &'static str,
    pub decision: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

/// The webhook's metrics and the registry they are encoded from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub review_duration: Family<ReviewLabels, Histogram>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub rejected: Family<RejectLabels, Counter>,
    pub in_flight: Gauge,
    pub cert_reloads: Counter,
    pub cert_reload_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("runyard_webhook");
        let review_duration = Family::<ReviewLabels, Histogram>::new_with_constructor(|| {
            // 25 µs .. ~0.4 s
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_025, 2.5, 12,
            ))
        });
        registry.register(
            "request_duration_seconds",
            "Time to handle one AdmissionReview (parse, mutate, serialise)",
            review_duration.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "AdmissionReviews answered, by kind, decision and denial reason",
            decisions.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests refused before review: overload (429), body too large (413), bad request (400), deadline (504), connection limit",
            rejected.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_reviews",
            "Reviews being handled",
            in_flight.clone(),
        );
        let cert_reloads = Counter::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads after the files changed",
            cert_reloads.clone(),
        );
        let cert_reload_errors = Counter::default();
        registry.register(
            "certificate_reload_errors",
            "Failed attempts to reload the serving certificate (the previous one stays in use)",
            cert_reload_errors.clone(),
        );
        Self {
            registry,
            review_duration,
            decisions,
            rejected,
            in_flight,
            cert_reloads,
            cert_reload_errors,
        }
    }

    /// The metrics in Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }
}

impl crate::http::Rejections for Metrics {
    fn reject(&self, reason: &'static str) {
        Metrics::reject(self, reason);
    }
}
