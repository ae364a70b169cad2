//! Backup catalogs: [`BarmanS3Catalog`] reads what barman-cloud writes to S3 (base backups with
//! their `backup.info`, WAL segments, timeline history files) and implements the
//! [`BackupCatalog`] port; the window, gaps and target checks are the port's pure analysis.
//!
//! S3 access is aws-sdk-s3 with a configurable endpoint and path-style addressing (S3-compatible
//! stores, the sandbox server), HTTPS through rustls + ring. Listings are paginated
//! (ListObjectsV2 continuation tokens) and folded page by page, so memory does not grow with
//! the number of WAL segments; only `backup.info` and history files (small) are downloaded,
//! each with a size cap.

mod barman;

use std::fmt;

pub use barman::BarmanS3Catalog;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use runbot_commands::ports::backup::CatalogError;

/// How to reach the S3 service.
#[derive(Clone)]
pub struct S3Config {
    /// `http(s)://host:port` of an S3-compatible service; `None` for AWS itself.
    pub endpoint_url: Option<String>,
    pub region: String,
    /// `https://host/bucket/key` instead of `https://bucket.host/key` (needed by most
    /// S3-compatible servers).
    pub force_path_style: bool,
    pub credentials: S3Credentials,
}

/// Static credentials. `Debug` never shows the secret or the session token.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl S3Config {
    /// Static keys; path-style addressing when an endpoint is given (S3-compatible servers).
    pub fn new(endpoint_url: Option<&str>, region: &str, access_key_id: &str, secret_access_key: &str) -> S3Config {
        S3Config {
            endpoint_url: endpoint_url.map(str::to_owned),
            region: region.to_owned(),
            force_path_style: endpoint_url.is_some(),
            credentials: S3Credentials {
                access_key_id: access_key_id.to_owned(),
                secret_access_key: secret_access_key.to_owned(),
                session_token: None,
            },
        }
    }

    /// An aws-sdk-s3 client for this configuration.
    pub fn client(&self) -> Result<aws_sdk_s3::Client, String> {
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!("S3 endpoint {url:?} is not an http(s) URL"));
        }
        if self.region.trim().is_empty() {
            return Err("S3 region is empty".into());
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let c = &self.credentials;
        let mut b = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(self.region.clone()))
            .credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "runbot-config",
            ))
            .force_path_style(self.force_path_style);
        if let Some(url) = &self.endpoint_url {
            b = b.endpoint_url(url.clone());
        }
        Ok(aws_sdk_s3::Client::from_conf(b.build()))
    }
}

/// `s3://bucket/prefix` → (bucket, prefix without slashes at either end).
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len()) && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid {
        return Err(format!("{url:?}: {bucket:?} is not a valid bucket name"));
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

pub(crate) fn storage_error(location: &str, message: impl Into<String>) -> CatalogError {
    CatalogError::Storage { location: location.to_owned(), message: message.into() }
}
