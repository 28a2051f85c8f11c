//! The certificate the webhook manages itself (`runyard webhook
//! --cert-secret`): its Secret format, the trust check, and the rotation
//! plan. No I/O: the webhook's rotator (`webhook::rotator`) reads the Secret
//! and the MutatingWebhookConfiguration, asks [`plan`] for the next step and
//! writes it, guarded by resourceVersion, so replicas that race agree on one
//! Secret.
//!
//! The Secret (`kubernetes.io/tls`) holds the served pair (`tls.crt`,
//! `tls.key`), the CAs the API server must trust (`ca.crt`, which becomes
//! every webhook's `caBundle`) and, during a rotation, the next pair
//! (`next.crt`, `next.key`). Validity is in annotations. CA keys are never
//! stored: each rotation makes a new CA.
//!
//! A rotation never leaves the API server without a trusted certificate:
//! 1. at 2/3 of the served certificate's lifetime a new CA and certificate
//!    are written as `next`, and `ca.crt` becomes the served CA plus the new
//!    one;
//! 2. every webhook's `caBundle` is set to `ca.crt`;
//! 3. once the caBundle has held the new CA for the trust delay (so every API
//!    server has picked it up), `next` becomes the served pair. The old CA
//!    stays in `ca.crt` until the next rotation, so a replica that has not
//!    reloaded yet is still trusted.

use super::{generate_at, CertError};
use crate::vocab::{
    ANNOTATION_CERT_NAMES, ANNOTATION_CERT_NOT_AFTER, ANNOTATION_CERT_NOT_BEFORE,
    ANNOTATION_NEXT_CERT_NOT_AFTER, ANNOTATION_NEXT_CERT_NOT_BEFORE,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Data keys of the Secret.
pub const KEY_CERT: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const KEY_CA: &str = "ca.crt";
pub const KEY_NEXT_CERT: &str = "next.crt";
pub const KEY_NEXT_KEY: &str = "next.key";

/// A certificate and its key, PEM, with their validity (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert: String,
    pub key: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl Pair {
    /// When it is replaced: after two thirds of its lifetime.
    pub fn renew_at(&self) -> i64 {
        self.not_before + (self.not_after - self.not_before) / 3 * 2
    }
}

/// The contents of a self-managed certificate Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// DNS names and IPs the certificates are for.
    pub names: Vec<String>,
    /// What every replica serves.
    pub served: Pair,
    /// The certificate being rolled out, once its CA is trusted.
    pub next: Option<Pair>,
    /// PEM of the CAs to trust: the `caBundle` of every webhook.
    pub ca_bundle: String,
}

/// The PEM certificates in `pem`, one string each.
pub fn pem_blocks(pem: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    pem.split_inclusive(END)
        .filter_map(|chunk| {
            let start = chunk.find("-----BEGIN CERTIFICATE-----")?;
            chunk
                .ends_with(END)
                .then(|| format!("{}\n", &chunk[start..]))
        })
        .collect()
}

/// Whether a client that trusts exactly the CAs in `ca_bundle` accepts the
/// certificate chain `chain` (PEM, leaf first) for `server_name` at `now`
/// (seconds since the epoch) — what the API server checks when it calls the
/// webhook.
pub fn verify(
    ca_bundle: &[u8],
    chain: &[u8],
    server_name: &str,
    now: i64,
) -> Result<(), CertError> {
    let untrusted = |what: String| CertError::Untrusted(what);
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(
        CertificateDer::pem_slice_iter(ca_bundle).filter_map(Result::ok),
    );
    if roots.is_empty() {
        return Err(untrusted(
            "the CA bundle holds no usable certificate".into(),
        ));
    }
    let mut certs = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| untrusted(format!("reading the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(untrusted("no certificate".into()));
    }
    let leaf = certs.remove(0);
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| untrusted(e.to_string()))?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| untrusted(format!("server name {server_name:?}: {e}")))?;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or_default(),
    ));
    verifier
        .verify_server_cert(&leaf, &certs, &name, &[], at)
        .map(|_| ())
        .map_err(|e| untrusted(e.to_string()))
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|s| !s.trim().is_empty())
}

fn number(annotations: &BTreeMap<String, String>, key: &str) -> Option<i64> {
    annotations.get(key).and_then(|v| v.parse().ok())
}

impl Managed {
    /// A new CA and certificate for `names`, issued at `now`.
    pub fn issue(names: &[String], now: i64, validity: i64) -> Result<Self, CertError> {
        let b = generate_at(names, now, validity)?;
        Ok(Self {
            names: names.to_vec(),
            served: Pair {
                cert: b.cert,
                key: b.key,
                not_before: b.not_before,
                not_after: b.not_after,
            },
            next: None,
            ca_bundle: b.ca_cert,
        })
    }

    /// Reads a Secret written by [`Managed::write_to`] (or by `runyard certs
    /// --secret`); `Err` says why it cannot be used.
    pub fn from_secret(secret: &Secret) -> Result<Self, String> {
        let (no_data, no_annotations) = (BTreeMap::new(), BTreeMap::new());
        let data = secret.data.as_ref().unwrap_or(&no_data);
        let annotations = secret
            .metadata
            .annotations
            .as_ref()
            .unwrap_or(&no_annotations);
        let (Some(cert), Some(key), Some(ca_bundle)) = (
            text(data, KEY_CERT),
            text(data, KEY_KEY),
            text(data, KEY_CA),
        ) else {
            return Err(format!("it lacks {KEY_CERT}, {KEY_KEY} or {KEY_CA}"));
        };
        let not_after = number(annotations, ANNOTATION_CERT_NOT_AFTER)
            .ok_or_else(|| format!("it has no {ANNOTATION_CERT_NOT_AFTER} annotation"))?;
        let names = annotations
            .get(ANNOTATION_CERT_NAMES)
            .map(|n| n.split(',').map(str::to_string).collect())
            .ok_or_else(|| format!("it has no {ANNOTATION_CERT_NAMES} annotation"))?;
        // Without a start (a Secret of `runyard certs`), the certificate is
        // due for rotation at once: a rotation with overlap, not a swap.
        let not_before = number(annotations, ANNOTATION_CERT_NOT_BEFORE).unwrap_or(0);
        let next = match (
            text(data, KEY_NEXT_CERT),
            text(data, KEY_NEXT_KEY),
            number(annotations, ANNOTATION_NEXT_CERT_NOT_BEFORE),
            number(annotations, ANNOTATION_NEXT_CERT_NOT_AFTER),
        ) {
            (Some(cert), Some(key), Some(not_before), Some(not_after)) => Some(Pair {
                cert,
                key,
                not_before,
                not_after,
            }),
            _ => None,
        };
        Ok(Self {
            names,
            served: Pair {
                cert,
                key,
                not_before,
                not_after,
            },
            next,
            ca_bundle,
        })
    }

    /// Writes data, type and annotations into `secret` (its other metadata,
    /// resourceVersion included, stays: the write is guarded by it).
    pub fn write_to(&self, secret: &mut Secret) {
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        let mut data = BTreeMap::from([
            (KEY_CERT.to_string(), bytes(&self.served.cert)),
            (KEY_KEY.to_string(), bytes(&self.served.key)),
            (KEY_CA.to_string(), bytes(&self.ca_bundle)),
        ]);
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(ANNOTATION_CERT_NAMES.into(), self.names.join(","));
        annotations.insert(
            ANNOTATION_CERT_NOT_BEFORE.into(),
            self.served.not_before.to_string(),
        );
        annotations.insert(
            ANNOTATION_CERT_NOT_AFTER.into(),
            self.served.not_after.to_string(),
        );
        match &self.next {
            Some(next) => {
                data.insert(KEY_NEXT_CERT.into(), bytes(&next.cert));
                data.insert(KEY_NEXT_KEY.into(), bytes(&next.key));
                annotations.insert(
                    ANNOTATION_NEXT_CERT_NOT_BEFORE.into(),
                    next.not_before.to_string(),
                );
                annotations.insert(
                    ANNOTATION_NEXT_CERT_NOT_AFTER.into(),
                    next.not_after.to_string(),
                );
            }
            None => {
                annotations.remove(ANNOTATION_NEXT_CERT_NOT_BEFORE);
                annotations.remove(ANNOTATION_NEXT_CERT_NOT_AFTER);
            }
        }
        secret
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert("app.kubernetes.io/name".into(), "runyard".into());
        // The type of an existing Secret cannot change (an Opaque one made
        // ahead of time stays Opaque); a new one is `kubernetes.io/tls`.
        if secret.type_.as_deref().is_none_or(str::is_empty) {
            secret.type_ = Some("kubernetes.io/tls".into());
        }
        secret.data = Some(data);
        secret.string_data = None;
    }

    /// Step 1 of a rotation: a new CA and certificate for `names` as `next`;
    /// the bundle becomes the served certificate's CA plus the new one
    /// (older CAs go).
    pub fn begin_rotation(
        &self,
        names: &[String],
        server_name: &str,
        now: i64,
        validity: i64,
    ) -> Result<Self, CertError> {
        let fresh = generate_at(names, now, validity)?;
        let served_by: Vec<String> = pem_blocks(&self.ca_bundle)
            .into_iter()
            .filter(|ca| {
                verify(ca.as_bytes(), self.served.cert.as_bytes(), server_name, now).is_ok()
            })
            .collect();
        let mut bundle = served_by.concat();
        bundle.push_str(&fresh.ca_cert);
        Ok(Self {
            names: names.to_vec(),
            served: self.served.clone(),
            next: Some(Pair {
                cert: fresh.cert,
                key: fresh.key,
                not_before: fresh.not_before,
                not_after: fresh.not_after,
            }),
            ca_bundle: bundle,
        })
    }

    /// Step 3: serve the next certificate; the bundle stays.
    pub fn promote(&self) -> Option<Self> {
        let next = self.next.clone()?;
        Some(Self {
            names: self.names.clone(),
            served: next,
            next: None,
            ca_bundle: self.ca_bundle.clone(),
        })
    }
}

/// What the rotation needs from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Names of the certificate.
    pub names: Vec<String>,
    /// The name the API server connects to (`SERVICE.NAMESPACE.svc`).
    pub server_name: String,
    /// Lifetime of new certificates, in seconds.
    pub validity: i64,
    /// How long the caBundle must have trusted the next certificate before
    /// it is served, in seconds.
    pub trust_delay: i64,
}

/// The next thing to do, from what the cluster holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write a new CA and certificate: there is no Secret, or it cannot be
    /// used (why). Nothing that could be trusted is lost by replacing it.
    Issue(String),
    /// Add a next certificate and its CA to the Secret.
    BeginRotation,
    /// Set every webhook's `caBundle` to the Secret's `ca.crt`.
    PatchCaBundle,
    /// Serve the next certificate.
    Promote,
    /// Nothing to write until `until` (seconds since the epoch): the
    /// caBundle must trust the next certificate a while longer.
    AwaitTrust { until: i64 },
    /// The MutatingWebhookConfiguration does not exist (or has no webhooks).
    NoWebhookConfig,
    /// Nothing to do.
    Steady,
}

/// Whether every webhook's caBundle trusts `chain` (the served certificate).
pub fn trusted_by_all(
    bundles: &[Option<Vec<u8>>],
    chain: &[u8],
    server_name: &str,
    now: i64,
) -> bool {
    !bundles.is_empty()
        && bundles.iter().all(|b| {
            b.as_deref()
                .is_some_and(|b| verify(b, chain, server_name, now).is_ok())
        })
}

/// Whether every webhook's caBundle is exactly `bundle`.
pub fn bundles_are(bundles: &[Option<Vec<u8>>], bundle: &str) -> bool {
    !bundles.is_empty()
        && bundles
            .iter()
            .all(|b| b.as_deref() == Some(bundle.as_bytes()))
}

/// The next step. `secret` is the Secret as read; `bundles` the caBundle of
/// each webhook of the configuration (`None`: no configuration);
/// `trusted_since` when the caBundle was first seen holding the Secret's
/// bundle while a next certificate waits.
pub fn plan(
    secret: Option<&Secret>,
    bundles: Option<&[Option<Vec<u8>>]>,
    trusted_since: Option<i64>,
    policy: &Policy,
    now: i64,
) -> Step {
    let Some(secret) = secret else {
        return Step::Issue("there is no Secret yet".into());
    };
    let m = match Managed::from_secret(secret) {
        Ok(m) => m,
        Err(why) => return Step::Issue(why),
    };
    let valid = |cert: &str| {
        verify(
            m.ca_bundle.as_bytes(),
            cert.as_bytes(),
            &policy.server_name,
            now,
        )
    };
    if let Err(e) = valid(&m.served.cert) {
        return Step::Issue(format!("its certificate cannot be served: {e}"));
    }
    // Still good for the API server, but for other names (a Secret of
    // `runyard certs`, or names added): replaced with an overlap.
    if m.names != policy.names {
        return Step::BeginRotation;
    }
    let next_ok = m
        .next
        .as_ref()
        .is_some_and(|n| valid(&n.cert).is_ok() && n.not_after >= m.served.not_after);
    if !next_ok && (m.next.is_some() || now >= m.served.renew_at()) {
        return Step::BeginRotation;
    }
    let Some(bundles) = bundles.filter(|b| !b.is_empty()) else {
        return Step::NoWebhookConfig;
    };
    if !bundles_are(bundles, &m.ca_bundle) {
        return Step::PatchCaBundle;
    }
    if next_ok {
        let until = trusted_since.unwrap_or(now) + policy.trust_delay;
        return if now >= until {
            Step::Promote
        } else {
            Step::AwaitTrust { until }
        };
    }
    Step::Steady
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const T0: i64 = 1_800_000_000;

    fn policy() -> Policy {
        Policy {
            names: vec!["svc.ns.svc".into(), "localhost".into()],
            server_name: "svc.ns.svc".into(),
            validity: 90 * DAY,
            trust_delay: 60,
        }
    }

    fn secret(m: &Managed) -> Secret {
        let mut s = Secret::default();
        m.write_to(&mut s);
        s
    }

    fn bundle(m: &Managed) -> Vec<Option<Vec<u8>>> {
        vec![Some(m.ca_bundle.as_bytes().to_vec()); 2]
    }

    #[test]
    fn a_rotation_walks_through_every_step_in_order() {
        let p = policy();
        assert_eq!(
            plan(None, None, None, &p, T0),
            Step::Issue("there is no Secret yet".into())
        );
        let first = Managed::issue(&p.names, T0, p.validity).expect("issue");
        let s = secret(&first);
        assert_eq!(Managed::from_secret(&s).as_ref(), Ok(&first));
        assert_eq!(plan(Some(&s), None, None, &p, T0), Step::NoWebhookConfig);
        let unset = vec![None, None];
        assert_eq!(
            plan(Some(&s), Some(&unset), None, &p, T0),
            Step::PatchCaBundle
        );
        assert_eq!(
            plan(Some(&s), Some(&bundle(&first)), None, &p, T0),
            Step::Steady
        );
        // Two thirds of 90 days, minus the backdating.
        let due = first.served.renew_at();
        assert_eq!(due, T0 - 300 + (90 * DAY + 300) / 3 * 2);
        assert_eq!(
            plan(Some(&s), Some(&bundle(&first)), None, &p, due - 1),
            Step::Steady
        );
        assert_eq!(
            plan(Some(&s), Some(&bundle(&first)), None, &p, due),
            Step::BeginRotation
        );

        let rotating = first
            .begin_rotation(&p.names, &p.server_name, due, p.validity)
            .expect("rotate");
        assert_eq!(
            rotating.served, first.served,
            "the old certificate is still served"
        );
        let cas = pem_blocks(&rotating.ca_bundle);
        assert_eq!(cas.len(), 2);
        assert_eq!(cas[0], first.ca_bundle, "old CA first, then the new one");
        let s = secret(&rotating);
        assert_eq!(Managed::from_secret(&s).as_ref(), Ok(&rotating));
        // The API server still has the old bundle: patch it before anything else.
        assert_eq!(
            plan(Some(&s), Some(&bundle(&first)), None, &p, due),
            Step::PatchCaBundle
        );
        let now = due + 5;
        assert_eq!(
            plan(Some(&s), Some(&bundle(&rotating)), Some(now), &p, now),
            Step::AwaitTrust { until: now + 60 }
        );
        assert_eq!(
            plan(Some(&s), Some(&bundle(&rotating)), Some(now), &p, now + 60),
            Step::Promote
        );

        let promoted = rotating.promote().expect("promote");
        assert_eq!(promoted.served, rotating.next.clone().expect("next"));
        assert_eq!(promoted.ca_bundle, rotating.ca_bundle, "old CA kept");
        let s = secret(&promoted);
        assert_eq!(
            s.data.as_ref().map(|d| d.contains_key(KEY_NEXT_CERT)),
            Some(false)
        );
        assert_eq!(
            plan(Some(&s), Some(&bundle(&promoted)), None, &p, now + 61),
            Step::Steady
        );
        // The next rotation drops the oldest CA.
        let later = promoted.served.renew_at();
        let again = promoted
            .begin_rotation(&p.names, &p.server_name, later, p.validity)
            .expect("rotate");
        let cas = pem_blocks(&again.ca_bundle);
        assert_eq!(cas.len(), 2);
        assert!(!cas.contains(&first.ca_bundle));
    }

    #[test]
    fn the_trust_check_is_a_real_tls_verification() {
        let p = policy();
        let a = Managed::issue(&p.names, T0, p.validity).expect("issue");
        let b = Managed::issue(&p.names, T0, p.validity).expect("issue");
        let ok = |bundle: &str, cert: &str, name: &str, at: i64| {
            verify(bundle.as_bytes(), cert.as_bytes(), name, at).is_ok()
        };
        assert!(ok(&a.ca_bundle, &a.served.cert, "svc.ns.svc", T0));
        assert!(ok(&a.ca_bundle, &a.served.cert, "localhost", T0));
        assert!(
            !ok(&b.ca_bundle, &a.served.cert, "svc.ns.svc", T0),
            "other CA"
        );
        assert!(
            !ok(&a.ca_bundle, &a.served.cert, "other.ns.svc", T0),
            "other name"
        );
        assert!(
            !ok(&a.ca_bundle, &a.served.cert, "svc.ns.svc", T0 + 91 * DAY),
            "expired"
        );
        assert!(
            !ok(&a.ca_bundle, &a.served.cert, "svc.ns.svc", T0 - 3600),
            "not yet valid"
        );
        let both = format!("{}{}", a.ca_bundle, b.ca_bundle);
        assert!(ok(&both, &a.served.cert, "svc.ns.svc", T0));
        assert!(ok(&both, &b.served.cert, "svc.ns.svc", T0));
        assert!(!ok("", &a.served.cert, "svc.ns.svc", T0));
        let bundles = vec![
            Some(both.into_bytes()),
            Some(a.ca_bundle.clone().into_bytes()),
        ];
        assert!(trusted_by_all(
            &bundles,
            a.served.cert.as_bytes(),
            "svc.ns.svc",
            T0
        ));
        assert!(!trusted_by_all(
            &bundles,
            b.served.cert.as_bytes(),
            "svc.ns.svc",
            T0
        ));
        assert!(!trusted_by_all(
            &[],
            a.served.cert.as_bytes(),
            "svc.ns.svc",
            T0
        ));
    }

    #[test]
    fn unusable_secrets_are_replaced_and_foreign_ones_rotated() {
        let p = policy();
        let m = Managed::issue(&p.names, T0, p.validity).expect("issue");
        let hooks = bundle(&m);
        let step = |s: &Secret, at: i64| plan(Some(s), Some(&hooks), None, &p, at);
        // An empty Secret someone created ahead of time (its type stays).
        assert!(matches!(step(&Secret::default(), T0), Step::Issue(_)));
        let mut opaque = Secret {
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        m.write_to(&mut opaque);
        assert_eq!(opaque.type_.as_deref(), Some("Opaque"));
        assert_eq!(Managed::from_secret(&opaque).as_ref(), Ok(&m));
        // Expired.
        assert!(matches!(step(&secret(&m), T0 + 91 * DAY), Step::Issue(_)));
        // For other names (the Service was renamed): the API server cannot use it.
        let other = Managed::issue(&["x.ns.svc".to_string()], T0, p.validity).expect("issue");
        assert!(
            matches!(step(&secret(&other), T0), Step::Issue(why) if why.contains("svc.ns.svc"))
        );
        // Good for the API server, but its names are not all the wanted ones
        // (e.g. `runyard certs` added localhost): rotated with overlap, and
        // the next certificate has the wanted names.
        let fewer = Managed::issue(&p.names[..1], T0, p.validity).expect("issue");
        assert_eq!(step(&secret(&fewer), T0), Step::BeginRotation);
        let rotating = fewer
            .begin_rotation(&p.names, &p.server_name, T0, p.validity)
            .expect("rotate");
        assert_eq!(rotating.names, p.names);
        assert_eq!(
            step(&secret(&rotating), T0),
            Step::PatchCaBundle,
            "then on as any rotation"
        );
        // A garbled served certificate.
        let mut broken = m.clone();
        broken.served.cert = other.served.cert.clone();
        assert!(matches!(step(&secret(&broken), T0), Step::Issue(_)));
        // A Secret of `runyard certs --secret` (no start of validity): rotated
        // with overlap, not replaced.
        let mut s = secret(&m);
        s.metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .remove(ANNOTATION_CERT_NOT_BEFORE);
        assert_eq!(step(&s, T0), Step::BeginRotation);
        // A next certificate that cannot be used is made again.
        let mut bad_next = m
            .begin_rotation(&p.names, &p.server_name, T0, p.validity)
            .expect("rotate");
        if let Some(n) = bad_next.next.as_mut() {
            n.cert = other.served.cert.clone();
        }
        assert_eq!(step(&secret(&bad_next), T0), Step::BeginRotation);
    }

    #[test]
    fn pem_blocks_split_a_bundle() {
        let a = Managed::issue(&["a".to_string()], T0, DAY).expect("issue");
        let b = Managed::issue(&["b".to_string()], T0, DAY).expect("issue");
        let both = format!("{}{}", a.ca_bundle, b.ca_bundle);
        assert_eq!(
            pem_blocks(&both),
            [a.ca_bundle.clone(), b.ca_bundle.clone()]
        );
        assert!(pem_blocks("junk").is_empty());
    }
}
