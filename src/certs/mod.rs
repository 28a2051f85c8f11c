//! `runyard certs`: a CA and a serving certificate for the webhook Service
//! (rcgen), written to a directory, to a `kubernetes.io/tls` Secret, and as the
//! `caBundle` of the MutatingWebhookConfiguration. [`managed`] is the
//! certificate the webhook manages itself (`runyard webhook --cert-secret`).

pub mod managed;

use crate::vocab::{
    ANNOTATION_CERT_NAMES, ANNOTATION_CERT_NOT_AFTER, ANNOTATION_CERT_NOT_BEFORE,
    CERTS_FIELD_MANAGER,
};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{what}: {source}")]
    Cluster {
        what: String,
        source: Box<CertError>,
    },
    #[error("MutatingWebhookConfiguration {0:?} has no webhooks to patch")]
    NoWebhooks(String),
    #[error("time {0} (seconds since the epoch) is out of range")]
    Time(i64),
    #[error("the certificate is not trusted: {0}")]
    Untrusted(String),
}

/// A CA and a serving certificate signed by it, all PEM.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub ca_cert: String,
    /// Empty when the bundle was read back from a Secret (the CA key is never stored there).
    pub ca_key: String,
    pub cert: String,
    pub key: String,
    /// Start of validity, seconds since the epoch.
    pub not_before: i64,
    /// Expiry, seconds since the epoch.
    pub not_after: i64,
    pub names: Vec<String>,
}

/// DNS names under which the API server reaches a Service.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Generates a CA and a serving certificate for `names` (DNS names or IP
/// addresses), valid for `days`.
pub fn generate(names: &[String], days: u32) -> Result<Bundle, CertError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    generate_at(names, now, i64::from(days) * 86_400)
}

/// How far back the validity of a generated certificate starts, for clocks
/// that lag behind the one that issued it.
pub const BACKDATE_SECONDS: i64 = 300;

/// Generates a CA and a serving certificate for `names`, issued at `now`
/// (seconds since the epoch; valid from [`BACKDATE_SECONDS`] before it) and
/// valid for `validity_seconds`.
pub fn generate_at(names: &[String], now: i64, validity_seconds: i64) -> Result<Bundle, CertError> {
    let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).map_err(|_| CertError::Time(t));
    let not_before = at(now - BACKDATE_SECONDS)?;
    let not_after = at(now.saturating_add(validity_seconds))?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = dn("runyard webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    leaf.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    leaf.distinguished_name = dn(names
        .first()
        .map(String::as_str)
        .unwrap_or("runyard-webhook"));
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &issuer)?;

    Ok(Bundle {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
        not_before: not_before.unix_timestamp(),
        not_after: not_after.unix_timestamp(),
        names: names.to_vec(),
    })
}

/// The bundle stored in `secret`, if it is for exactly `names` and stays valid
/// for more than `renew_before_days` from `now` (seconds since the epoch).
pub fn reusable(
    secret: &Secret,
    names: &[String],
    renew_before_days: u32,
    now: i64,
) -> Option<Bundle> {
    let annotations = secret.metadata.annotations.as_ref()?;
    let not_after: i64 = annotations.get(ANNOTATION_CERT_NOT_AFTER)?.parse().ok()?;
    if annotations.get(ANNOTATION_CERT_NAMES)? != &names.join(",") {
        return None;
    }
    if not_after - now <= i64::from(renew_before_days) * 86_400 {
        return None;
    }
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        String::from_utf8(data.get(k)?.0.clone())
            .ok()
            .filter(|s| !s.is_empty())
    };
    Some(Bundle {
        ca_cert: text("ca.crt")?,
        ca_key: String::new(),
        cert: text("tls.crt")?,
        key: text("tls.key")?,
        not_before: annotations
            .get(ANNOTATION_CERT_NOT_BEFORE)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        not_after,
        names: names.to_vec(),
    })
}

/// Reads a Secret, if it exists.
pub async fn read_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, CertError> {
    Ok(Api::<Secret>::namespaced(client, namespace)
        .get_opt(name)
        .await?)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "runyard");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Writes `ca.crt`, `ca.key`, `tls.crt` and `tls.key` into `dir` (keys mode 0600).
/// Files are replaced atomically so a running webhook never reads half a file.
pub fn write_dir(bundle: &Bundle, dir: &Path) -> Result<Vec<PathBuf>, CertError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut written = Vec::new();
    for (name, content, secret) in [
        ("ca.crt", &bundle.ca_cert, false),
        ("ca.key", &bundle.ca_key, true),
        ("tls.key", &bundle.key, true),
        ("tls.crt", &bundle.cert, false),
    ] {
        if content.is_empty() {
            continue;
        }
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).map_err(io(&tmp))?;
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(io(&tmp))?;
        }
        #[cfg(not(unix))]
        let _ = secret;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// The `kubernetes.io/tls` Secret holding the serving certificate and the CA.
pub fn tls_secret(bundle: &Bundle, name: &str, namespace: &str) -> Secret {
    let data = BTreeMap::from([
        (
            "tls.crt".to_string(),
            ByteString(bundle.cert.clone().into_bytes()),
        ),
        (
            "tls.key".to_string(),
            ByteString(bundle.key.clone().into_bytes()),
        ),
        (
            "ca.crt".to_string(),
            ByteString(bundle.ca_cert.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "runyard".to_string(),
            )])),
            annotations: Some(BTreeMap::from([
                (
                    ANNOTATION_CERT_NOT_BEFORE.to_string(),
                    bundle.not_before.to_string(),
                ),
                (
                    ANNOTATION_CERT_NOT_AFTER.to_string(),
                    bundle.not_after.to_string(),
                ),
                (ANNOTATION_CERT_NAMES.to_string(), bundle.names.join(",")),
            ])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Default::default()
    }
}

/// Sets `caBundle` on every webhook of the configuration.
pub fn with_ca_bundle(
    mut config: MutatingWebhookConfiguration,
    ca_pem: &str,
) -> Result<MutatingWebhookConfiguration, CertError> {
    let name = config.metadata.name.clone().unwrap_or_default();
    let webhooks = config
        .webhooks
        .as_mut()
        .filter(|w| !w.is_empty())
        .ok_or(CertError::NoWebhooks(name))?;
    for hook in webhooks {
        hook.client_config.ca_bundle = Some(ByteString(ca_pem.as_bytes().to_vec()));
    }
    Ok(config)
}

/// Server-side applies the Secret.
pub async fn apply_secret(client: kube::Client, secret: &Secret) -> Result<(), CertError> {
    let namespace = secret.metadata.namespace.as_deref().unwrap_or("default");
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let mut body = secret.clone();
    body.metadata.managed_fields = None;
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": body.metadata.name,
            "namespace": body.metadata.namespace,
            "labels": body.metadata.labels,
            "annotations": body.metadata.annotations,
        },
        "type": body.type_,
        "data": body.data,
    });
    api.patch(
        name,
        &PatchParams::apply(CERTS_FIELD_MANAGER).force(),
        &Patch::Apply(value),
    )
    .await?;
    Ok(())
}

/// Sets `caBundle` on the named MutatingWebhookConfiguration (read, modify,
/// replace guarded by resourceVersion; retried on conflict).
pub async fn patch_webhook(
    client: kube::Client,
    name: &str,
    ca_pem: &str,
) -> Result<(), CertError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut attempts = 0;
    loop {
        let current = api.get(name).await?;
        let updated = with_ca_bundle(current, ca_pem)?;
        match api.replace(name, &PostParams::default(), &updated).await {
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 5 => attempts += 1,
            other => return other.map(|_| ()).map_err(CertError::from),
        }
    }
}

/// What `runyard certs` is asked to do.
#[derive(Debug, Clone)]
pub struct Provision {
    /// DNS names and IPs of the serving certificate.
    pub names: Vec<String>,
    pub days: u32,
    pub out_dir: PathBuf,
    /// Namespace of the Secret.
    pub namespace: String,
    /// Also write this `kubernetes.io/tls` Secret.
    pub secret: Option<String>,
    /// Also set `caBundle` on this MutatingWebhookConfiguration.
    pub patch_webhook: Option<String>,
    /// Keep an existing Secret for the same names unless it expires within this many days.
    pub renew_before_days: u32,
    /// Always generate new certificates.
    pub force: bool,
}

impl Provision {
    /// Whether the cluster is needed (`--secret`, `--patch-webhook`).
    pub fn needs_cluster(&self) -> bool {
        self.secret.is_some() || self.patch_webhook.is_some()
    }
}

fn in_cluster(what: String) -> impl FnOnce(CertError) -> CertError {
    move |e| CertError::Cluster {
        what,
        source: Box::new(e),
    }
}

/// Generates (or, with a Secret, reuses) the certificates, writes them to the
/// directory, and with a client writes the Secret and patches `caBundle`.
/// Returns what it did, a line each.
pub async fn provision(
    p: &Provision,
    client: Option<kube::Client>,
) -> Result<Vec<String>, CertError> {
    let mut done = Vec::new();
    let mut reused = None;
    if let (Some(client), Some(name), false) = (&client, &p.secret, p.force) {
        let existing = read_secret(client.clone(), &p.namespace, name)
            .await
            .map_err(in_cluster(format!("reading Secret {}/{name}", p.namespace)))?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        reused = existing.and_then(|s| reusable(&s, &p.names, p.renew_before_days, now));
    }
    let bundle = match reused {
        Some(b) => {
            done.push(format!(
                "reusing the valid certificate in Secret {}/{}",
                p.namespace,
                p.secret.as_deref().unwrap_or_default()
            ));
            b
        }
        None => generate(&p.names, p.days)?,
    };
    for f in write_dir(&bundle, &p.out_dir)? {
        done.push(format!("wrote {}", f.display()));
    }
    let Some(client) = client else {
        return Ok(done);
    };
    if let Some(name) = &p.secret {
        // A reused bundle (no CA key in hand) is already in the Secret.
        if !bundle.ca_key.is_empty() {
            let secret = tls_secret(&bundle, name, &p.namespace);
            apply_secret(client.clone(), &secret)
                .await
                .map_err(in_cluster(format!("writing Secret {}/{name}", p.namespace)))?;
            done.push(format!("applied Secret {}/{name}", p.namespace));
        }
    }
    if let Some(name) = &p.patch_webhook {
        patch_webhook(client, name, &bundle.ca_cert)
            .await
            .map_err(in_cluster(format!(
                "patching caBundle of MutatingWebhookConfiguration {name}"
            )))?;
        done.push(format!(
            "patched caBundle of MutatingWebhookConfiguration {name}"
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, WebhookClientConfig};

    #[test]
    fn names_cover_the_service_dns_forms() {
        let names = service_dns_names("runyard-webhook", "runyard");
        assert!(names.contains(&"runyard-webhook.runyard.svc".to_string()));
        assert!(names.contains(&"runyard-webhook.runyard.svc.cluster.local".to_string()));
    }

    #[test]
    fn generates_a_ca_signed_leaf_and_writes_it() {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let bundle = generate(&names, 30).expect("generate");
        assert!(bundle.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(bundle.key.contains("PRIVATE KEY"));
        assert_ne!(bundle.ca_cert, bundle.cert);
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_dir(&bundle, dir.path()).expect("write");
        assert_eq!(files.len(), 4);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tls.key"))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_valid_secret_is_reused_and_an_expiring_one_is_not() {
        let names = vec!["svc".to_string(), "svc.ns.svc".to_string()];
        let bundle = generate(&names, 365).expect("generate");
        let secret = tls_secret(&bundle, "tls", "ns");
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let reused = reusable(&secret, &names, 30, now).expect("reusable");
        assert_eq!(reused.cert, bundle.cert);
        assert_eq!(reused.ca_cert, bundle.ca_cert);
        assert!(
            reusable(&secret, &names, 30, now + 340 * 86_400).is_none(),
            "expires within 30 days"
        );
        assert!(
            reusable(&secret, &names[..1], 30, now).is_none(),
            "other names"
        );
        let mut bare = secret.clone();
        bare.metadata.annotations = None;
        assert!(reusable(&bare, &names, 30, now).is_none(), "unknown expiry");
    }

    #[test]
    fn secret_and_ca_bundle() {
        let bundle = generate(&["svc".to_string()], 1).expect("generate");
        let secret = tls_secret(&bundle, "tls", "runyard");
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert!(secret.data.as_ref().expect("data").contains_key("tls.key"));

        let hook = MutatingWebhook {
            name: "pods.runyard.dev".into(),
            client_config: WebhookClientConfig::default(),
            ..Default::default()
        };
        let config = MutatingWebhookConfiguration {
            metadata: kube::api::ObjectMeta {
                name: Some("runyard".into()),
                ..Default::default()
            },
            webhooks: Some(vec![hook.clone(), hook]),
        };
        let patched = with_ca_bundle(config, &bundle.ca_cert).expect("patch");
        for hook in patched.webhooks.expect("webhooks") {
            assert_eq!(
                hook.client_config.ca_bundle.expect("caBundle").0,
                bundle.ca_cert.as_bytes()
            );
        }
        let empty = MutatingWebhookConfiguration::default();
        assert!(matches!(
            with_ca_bundle(empty, "x"),
            Err(CertError::NoWebhooks(_))
        ));
    }
}
