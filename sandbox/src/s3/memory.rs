//! The in-memory backend of the sandbox S3 server: buckets are ordered maps from key to object,
//! so a ListObjectsV2 page is one range scan — O(page + log n), whatever the bucket holds —
//! where s3s-fs walks the whole bucket directory for every page.
//!
//! Operations (what barman-cloud's boto3 calls and what aws-sdk-s3 users here send):
//! CreateBucket, HeadBucket, GetBucketLocation, ListBuckets, DeleteBucket (empty only);
//! PutObject (Content-MD5, the `x-amz-checksum-*` headers and aws-chunked trailers checked,
//! If-None-Match / If-Match), GetObject and HeadObject (Range, If-Match / If-None-Match,
//! stored checksums when asked for the whole object), DeleteObject, DeleteObjects;
//! ListObjectsV2 and ListObjects (prefix, delimiter with common prefixes, max-keys ≤ 1000,
//! continuation token / start-after / marker, `encoding-type=url`); multipart uploads
//! (CreateMultipartUpload, UploadPart, CompleteMultipartUpload — parts in order, ETags checked,
//! 5 MiB minimum but for the last, the `md5-of-md5s-N` ETag — AbortMultipartUpload, ListParts).
//! Anything else answers `NotImplemented` (the trait's default).
//!
//! [`MemoryStore::insert`] puts objects directly, without HTTP, for fixtures of any size.

use runbot_commands::setup::{SetupError, SetupResult};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

/// S3's largest page (and the default).
const MAX_KEYS: i32 = 1000;
/// S3's smallest part but for the last one.
const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
const MAX_PART_NUMBER: i32 = 10_000;

/// The buckets and uploads; cheap to clone (shared state), usable from any thread.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<RwLock<State>>,
}

#[derive(Default)]
struct State {
    buckets: BTreeMap<String, Bucket>,
    uploads: HashMap<String, Upload>,
    next_upload: u64,
}

struct Bucket {
    created: SystemTime,
    objects: BTreeMap<String, StoredObject>,
}

#[derive(Clone)]
struct StoredObject {
    body: Bytes,
    /// Hex, without quotes: the MD5 of the body, or `md5-of-part-md5s-N` after a multipart upload.
    etag: String,
    modified: SystemTime,
    /// Boxed: most objects (every fixture object) have none.
    attrs: Option<Box<Attrs>>,
    /// The checksums the client sent and the server verified (whole-object uploads only).
    checksum: Option<Box<s3s::dto::Checksum>>,
}

#[derive(Clone, Default)]
struct Attrs {
    content_type: Option<ContentType>,
    content_encoding: Option<ContentEncoding>,
    content_disposition: Option<ContentDisposition>,
    content_language: Option<ContentLanguage>,
    cache_control: Option<CacheControl>,
    metadata: Option<Metadata>,
}

impl Attrs {
    fn boxed(self) -> Option<Box<Attrs>> {
        let empty = self.content_type.is_none()
            && self.content_encoding.is_none()
            && self.content_disposition.is_none()
            && self.content_language.is_none()
            && self.cache_control.is_none()
            && self.metadata.as_ref().is_none_or(|m| m.is_empty());
        (!empty).then(|| Box::new(self))
    }
}

struct Upload {
    bucket: String,
    key: String,
    attrs: Option<Box<Attrs>>,
    parts: BTreeMap<i32, StoredPart>,
}

struct StoredPart {
    body: Bytes,
    md5: [u8; 16],
    modified: SystemTime,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates an empty bucket; `false` if it already exists.
    pub fn create_bucket(&self, name: &str) -> bool {
        let mut state = self.write();
        if state.buckets.contains_key(name) {
            return false;
        }
        state.buckets.insert(name.to_owned(), Bucket { created: SystemTime::now(), objects: BTreeMap::new() });
        true
    }

    /// Puts an object without going through HTTP (fixtures): `modified` is its LastModified.
    /// Replaces an object of the same key. Errors if the bucket does not exist.
    pub fn insert(&self, bucket: &str, key: &str, body: impl Into<Bytes>, modified: SystemTime) -> SetupResult<()> {
        let body = body.into();
        let etag = hex::encode(Md5::checksum(&body));
        let mut state = self.write();
        let b = state.buckets.get_mut(bucket).ok_or_else(|| SetupError(format!("no bucket {bucket:?}")))?;
        b.objects.insert(key.to_owned(), StoredObject { body, etag, modified, attrs: None, checksum: None });
        Ok(())
    }

    /// Number of objects in `bucket` (`None`: no such bucket).
    pub fn object_count(&self, bucket: &str) -> Option<usize> {
        self.read().buckets.get(bucket).map(|b| b.objects.len())
    }

    /// Copies an object's body out (`None`: no such bucket or key).
    pub fn get(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.read().buckets.get(bucket)?.objects.get(key).map(|o| o.body.clone())
    }

    fn object(&self, bucket: &str, key: &str) -> S3Result<StoredObject> {
        let state = self.read();
        let b = state.buckets.get(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        b.objects.get(key).cloned().ok_or_else(|| s3_error!(NoSuchKey))
    }
}

/// Reads a request body whole, computing its MD5 and the checksums the client declared, and
/// checks them against the headers and the aws-chunked trailers.
struct Received {
    body: Bytes,
    md5: [u8; 16],
    checksum: s3s::dto::Checksum,
}

async fn receive(
    body: Option<StreamingBlob>,
    content_md5: Option<&str>,
    algorithm: Option<&ChecksumAlgorithm>,
    declared: s3s::dto::Checksum,
    trailers: Option<&s3s::TrailingHeaders>,
) -> S3Result<Received> {
    let body = body.ok_or_else(|| s3_error!(IncompleteBody))?;
    let mut hasher = s3s::checksum::ChecksumHasher::default();
    if declared.checksum_crc32.is_some() {
        hasher.crc32 = Some(Default::default());
    }
    if declared.checksum_crc32c.is_some() {
        hasher.crc32c = Some(Default::default());
    }
    if declared.checksum_sha1.is_some() {
        hasher.sha1 = Some(Default::default());
    }
    if declared.checksum_sha256.is_some() {
        hasher.sha256 = Some(Default::default());
    }
    if declared.checksum_crc64nvme.is_some() {
        hasher.crc64nvme = Some(Default::default());
    }
    if let Some(alg) = algorithm {
        match alg.as_str() {
            ChecksumAlgorithm::CRC32 => hasher.crc32 = Some(Default::default()),
            ChecksumAlgorithm::CRC32C => hasher.crc32c = Some(Default::default()),
            ChecksumAlgorithm::SHA1 => hasher.sha1 = Some(Default::default()),
            ChecksumAlgorithm::SHA256 => hasher.sha256 = Some(Default::default()),
            ChecksumAlgorithm::CRC64NVME => hasher.crc64nvme = Some(Default::default()),
            other => return Err(s3_error!(NotImplemented, "unsupported checksum algorithm {other}")),
        }
    }
    let mut md5 = Md5::new();
    let mut buf = BytesMut::new();
    let mut stream = body;
    while let Some(chunk) = stream.try_next().await.map_err(|e| S3Error::with_source(S3ErrorCode::IncompleteBody, e))? {
        md5.update(&chunk);
        hasher.update(&chunk);
        buf.extend_from_slice(&chunk);
    }
    let md5 = md5.finalize();
    if let Some(expected) = content_md5 {
        use base64::Engine as _;
        let expected =
            base64::engine::general_purpose::STANDARD.decode(expected).map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
        if expected != md5 {
            return Err(s3_error!(BadDigest, "Content-MD5 mismatch"));
        }
    }
    let mut declared = declared;
    if let Some(headers) = trailers.and_then(|t| t.take()) {
        let get = |name: &str| -> S3Result<Option<String>> {
            headers.get(name).map(|v| v.to_str().map(str::to_owned).map_err(|_| s3_error!(InvalidArgument, "trailer {name}"))).transpose()
        };
        if let Some(v) = get("x-amz-checksum-crc32")? {
            declared.checksum_crc32 = Some(v);
        }
        if let Some(v) = get("x-amz-checksum-crc32c")? {
            declared.checksum_crc32c = Some(v);
        }
        if let Some(v) = get("x-amz-checksum-sha1")? {
            declared.checksum_sha1 = Some(v);
        }
        if let Some(v) = get("x-amz-checksum-sha256")? {
            declared.checksum_sha256 = Some(v);
        }
        if let Some(v) = get("x-amz-checksum-crc64nvme")? {
            declared.checksum_crc64nvme = Some(v);
        }
    }
    let computed = hasher.finalize();
    for (name, got, want) in [
        ("crc32", &computed.checksum_crc32, &declared.checksum_crc32),
        ("crc32c", &computed.checksum_crc32c, &declared.checksum_crc32c),
        ("sha1", &computed.checksum_sha1, &declared.checksum_sha1),
        ("sha256", &computed.checksum_sha256, &declared.checksum_sha256),
        ("crc64nvme", &computed.checksum_crc64nvme, &declared.checksum_crc64nvme),
    ] {
        if got != want {
            return Err(s3_error!(
                BadDigest,
                "checksum {name} mismatch: declared {:?}, computed {:?}",
                want.as_deref().unwrap_or(""),
                got.as_deref().unwrap_or("")
            ));
        }
    }
    Ok(Received { body: buf.freeze(), md5, checksum: computed })
}

fn is_empty_checksum(c: &s3s::dto::Checksum) -> bool {
    c.checksum_crc32.is_none()
        && c.checksum_crc32c.is_none()
        && c.checksum_sha1.is_none()
        && c.checksum_sha256.is_none()
        && c.checksum_crc64nvme.is_none()
}

/// If-Match / If-None-Match against an existing object (`None`: no object).
fn check_write_conditions(existing: Option<&StoredObject>, if_match: Option<&IfMatch>, if_none_match: Option<&IfNoneMatch>) -> S3Result<()> {
    if let Some(c) = if_none_match
        && existing.is_some()
        && (c.is_any() || c.as_etag().is_some_and(|e| existing.is_some_and(|o| e.value() == o.etag)))
    {
        return Err(s3_error!(PreconditionFailed, "the object already exists"));
    }
    if let Some(c) = if_match {
        let Some(o) = existing else { return Err(s3_error!(PreconditionFailed, "the object does not exist")) };
        if let Some(e) = c.as_etag()
            && e.value() != o.etag
        {
            return Err(s3_error!(PreconditionFailed, "ETag does not match"));
        }
    }
    Ok(())
}

/// If-Match / If-None-Match / If-(Un)Modified-Since on a read (RFC 9110 precedence).
fn check_read_conditions(
    o: &StoredObject,
    if_match: Option<&IfMatch>,
    if_none_match: Option<&IfNoneMatch>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified = Timestamp::from(o.modified);
    if let Some(c) = if_match {
        if c.as_etag().is_some_and(|e| e.value() != o.etag) {
            return Err(s3_error!(PreconditionFailed));
        }
    } else if let Some(t) = if_unmodified_since
        && modified > *t
    {
        return Err(s3_error!(PreconditionFailed));
    }
    if let Some(c) = if_none_match {
        if c.is_any() || c.as_etag().is_some_and(|e| e.value() == o.etag) {
            return Err(s3_error!(NotModified));
        }
    } else if let Some(t) = if_modified_since
        && modified <= *t
    {
        return Err(s3_error!(NotModified));
    }
    Ok(())
}

fn checksum_mode_enabled(mode: Option<&ChecksumMode>) -> bool {
    mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED)
}

/// The smallest string greater than every string starting with `p` (`None`: there is none).
fn prefix_end(p: &str) -> Option<String> {
    let mut chars: Vec<char> = p.chars().collect();
    while let Some(c) = chars.pop() {
        let next = match c as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `encoding-type=url`: every byte but unreserved characters and `/` percent-encoded (clients
/// decode keys, prefixes and markers in the response).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One page of a listing.
struct Page {
    objects: Vec<Object>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key or common prefix returned (the next page starts after it).
    last: Option<String>,
}

/// Lists `prefix` in key order after `marker`, rolling keys up to the first `delimiter` after
/// the prefix into common prefixes: one range scan from the marker, and one jump over every
/// common prefix, so a page costs O(max_keys × log n), not O(n).
fn list_page(objects: &BTreeMap<String, StoredObject>, prefix: &str, delimiter: Option<&str>, marker: Option<&str>, max_keys: usize) -> Page {
    let mut page = Page { objects: Vec::new(), prefixes: Vec::new(), truncated: false, last: None };
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut start: Bound<String> = match marker {
        Some(m) if m >= prefix => Bound::Excluded(m.to_owned()),
        _ => Bound::Included(prefix.to_owned()),
    };
    'scan: loop {
        let range = objects.range::<str, _>((start.as_ref().map(String::as_str), Bound::Unbounded));
        for (key, o) in range {
            if !key.starts_with(prefix) {
                break 'scan;
            }
            let rolled = delimiter.and_then(|d| key[prefix.len()..].find(d).map(|i| &key[..prefix.len() + i + d.len()]));
            if let Some(cp) = rolled {
                // A prefix at or before the marker was returned by an earlier page.
                if marker.is_none_or(|m| cp > m) {
                    if page.objects.len() + page.prefixes.len() >= max_keys {
                        page.truncated = true;
                        break 'scan;
                    }
                    page.prefixes.push(cp.to_owned());
                    page.last = Some(cp.to_owned());
                }
                match prefix_end(cp) {
                    Some(end) => {
                        start = Bound::Included(end);
                        continue 'scan;
                    }
                    None => break 'scan,
                }
            }
            if page.objects.len() + page.prefixes.len() >= max_keys {
                page.truncated = true;
                break 'scan;
            }
            page.objects.push(Object {
                key: Some(key.clone()),
                last_modified: Some(Timestamp::from(o.modified)),
                size: Some(o.body.len() as i64),
                e_tag: Some(ETag::Strong(o.etag.clone())),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                ..Default::default()
            });
            page.last = Some(key.clone());
        }
        break;
    }
    page
}

fn max_keys(n: Option<i32>) -> S3Result<usize> {
    match n {
        None => Ok(MAX_KEYS as usize),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok(n.min(MAX_KEYS) as usize),
    }
}

impl MemoryStore {
    fn list(&self, bucket: &str, prefix: &str, delimiter: Option<&str>, marker: Option<&str>, max_keys: usize) -> S3Result<Page> {
        let state = self.read();
        let b = state.buckets.get(bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        Ok(list_page(&b.objects, prefix, delimiter, marker, max_keys))
    }
}

#[async_trait::async_trait]
impl S3 for MemoryStore {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        if !s3s::path::check_bucket_name(&bucket) {
            return Err(s3_error!(InvalidBucketName));
        }
        if !MemoryStore::create_bucket(self, &bucket) {
            return Err(s3_error!(BucketAlreadyOwnedByYou));
        }
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{bucket}")) }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let mut state = self.write();
        let b = state.buckets.get(&req.input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        if !b.objects.is_empty() {
            return Err(s3_error!(BucketNotEmpty));
        }
        state.buckets.remove(&req.input.bucket);
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        if !self.read().buckets.contains_key(&req.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(&self, req: S3Request<GetBucketLocationInput>) -> S3Result<S3Response<GetBucketLocationOutput>> {
        if !self.read().buckets.contains_key(&req.input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .read()
            .buckets
            .iter()
            .map(|(name, b)| s3s::dto::Bucket { name: Some(name.clone()), creation_date: Some(Timestamp::from(b.created)), bucket_region: None })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        if let Some(class) = &input.storage_class
            && !["STANDARD", "REDUCED_REDUNDANCY"].contains(&class.as_str())
        {
            return Err(s3_error!(InvalidStorageClass));
        }
        if !self.read().buckets.contains_key(&input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        let declared = s3s::dto::Checksum {
            checksum_crc32: input.checksum_crc32,
            checksum_crc32c: input.checksum_crc32c,
            checksum_sha1: input.checksum_sha1,
            checksum_sha256: input.checksum_sha256,
            checksum_crc64nvme: input.checksum_crc64nvme,
            ..Default::default()
        };
        let got =
            receive(input.body, input.content_md5.as_deref(), input.checksum_algorithm.as_ref(), declared, req.trailing_headers.as_ref()).await?;
        let attrs = Attrs {
            content_type: input.content_type,
            content_encoding: input.content_encoding,
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            metadata: input.metadata,
        };
        let object = StoredObject {
            body: got.body,
            etag: hex::encode(got.md5),
            modified: SystemTime::now(),
            attrs: attrs.boxed(),
            checksum: (!is_empty_checksum(&got.checksum)).then(|| Box::new(got.checksum.clone())),
        };
        let etag = object.etag.clone();
        {
            let mut state = self.write();
            let b = state.buckets.get_mut(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
            // Checked under the lock, so two conditional writers cannot both win.
            check_write_conditions(b.objects.get(&input.key), input.if_match.as_ref(), input.if_none_match.as_ref())?;
            b.objects.insert(input.key, object);
        }
        let c = got.checksum;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            checksum_crc64nvme: c.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        if input.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "GetObject by part number"));
        }
        let o = self.object(&input.bucket, &input.key)?;
        check_read_conditions(
            &o,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let len = o.body.len() as u64;
        let (body, content_range) = match &input.range {
            None => (o.body.clone(), None),
            Some(r) => {
                let r = r.check(len)?;
                (o.body.slice(r.start as usize..r.end as usize), Some(format!("bytes {}-{}/{len}", r.start, r.end - 1)))
            }
        };
        let whole = content_range.is_none();
        let checksum = o.checksum.as_deref().filter(|_| whole && checksum_mode_enabled(input.checksum_mode.as_ref())).cloned().unwrap_or_default();
        let attrs = o.attrs.as_deref().cloned().unwrap_or_default();
        let content_length = body.len() as i64;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            content_length: Some(content_length),
            content_range,
            accept_ranges: Some("bytes".into()),
            last_modified: Some(Timestamp::from(o.modified)),
            e_tag: Some(ETag::Strong(o.etag.clone())),
            content_type: attrs.content_type,
            content_encoding: attrs.content_encoding,
            content_disposition: attrs.content_disposition,
            content_language: attrs.content_language,
            cache_control: attrs.cache_control,
            metadata: attrs.metadata,
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        if input.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "HeadObject by part number"));
        }
        let o = self.object(&input.bucket, &input.key)?;
        check_read_conditions(
            &o,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let len = o.body.len() as u64;
        let (content_length, content_range) = match &input.range {
            None => (len, None),
            Some(r) => {
                let r = r.check(len)?;
                (r.end - r.start, Some(format!("bytes {}-{}/{len}", r.start, r.end - 1)))
            }
        };
        let whole = content_range.is_none();
        let checksum = o.checksum.as_deref().filter(|_| whole && checksum_mode_enabled(input.checksum_mode.as_ref())).cloned().unwrap_or_default();
        let attrs = o.attrs.as_deref().cloned().unwrap_or_default();
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(content_length as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            last_modified: Some(Timestamp::from(o.modified)),
            e_tag: Some(ETag::Strong(o.etag.clone())),
            content_type: attrs.content_type,
            content_encoding: attrs.content_encoding,
            content_disposition: attrs.content_disposition,
            content_language: attrs.content_language,
            cache_control: attrs.cache_control,
            metadata: attrs.metadata,
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        let mut state = self.write();
        let b = state.buckets.get_mut(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        if let Some(c) = &input.if_match {
            let Some(o) = b.objects.get(&input.key) else { return Err(s3_error!(PreconditionFailed)) };
            if c.as_etag().is_some_and(|e| e.value() != o.etag) {
                return Err(s3_error!(PreconditionFailed));
            }
        }
        // Deleting a key that does not exist succeeds, as on S3.
        b.objects.remove(&input.key);
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "more than 1000 keys"));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut state = self.write();
        let b = state.buckets.get_mut(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        let mut deleted = Vec::new();
        for id in input.delete.objects {
            b.objects.remove(&id.key);
            if !quiet {
                deleted.push(DeletedObject { key: Some(id.key), version_id: id.version_id, ..Default::default() });
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), ..Default::default() }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.as_deref().unwrap_or("");
        // The continuation token is the last key or prefix returned; it wins over start-after.
        let marker = input.continuation_token.as_deref().or(input.start_after.as_deref());
        let page = self.list(&input.bucket, prefix, input.delimiter.as_deref(), marker, max)?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let key_count = (page.objects.len() + page.prefixes.len()) as i32;
        let contents = page
            .objects
            .into_iter()
            .map(|mut o| {
                o.key = o.key.map(enc);
                o
            })
            .collect::<Vec<_>>();
        let prefixes = page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect::<Vec<_>>();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(prefix.to_owned())),
            delimiter: input.delimiter.map(enc),
            start_after: input.start_after.map(enc),
            encoding_type: input.encoding_type,
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            is_truncated: Some(page.truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: if page.truncated { page.last } else { None },
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.as_deref().unwrap_or("");
        let page = self.list(&input.bucket, prefix, input.delimiter.as_deref(), input.marker.as_deref(), max)?;
        let url = input.encoding_type.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        // NextMarker is returned only with a delimiter (without one, clients use the last key).
        let next_marker = if page.truncated && input.delimiter.is_some() { page.last.map(enc) } else { None };
        let contents = page
            .objects
            .into_iter()
            .map(|mut o| {
                o.key = o.key.map(enc);
                o
            })
            .collect::<Vec<_>>();
        let prefixes = page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect::<Vec<_>>();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(prefix.to_owned())),
            delimiter: input.delimiter.map(enc),
            marker: input.marker.map(enc),
            encoding_type: input.encoding_type,
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            next_marker,
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(&self, req: S3Request<CreateMultipartUploadInput>) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let attrs = Attrs {
            content_type: input.content_type,
            content_encoding: input.content_encoding,
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            metadata: input.metadata,
        };
        let mut state = self.write();
        if !state.buckets.contains_key(&input.bucket) {
            return Err(s3_error!(NoSuchBucket));
        }
        state.next_upload += 1;
        let id = format!("mem-{:016x}", state.next_upload);
        state
            .uploads
            .insert(id.clone(), Upload { bucket: input.bucket.clone(), key: input.key.clone(), attrs: attrs.boxed(), parts: BTreeMap::new() });
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"));
        }
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let declared = s3s::dto::Checksum {
            checksum_crc32: input.checksum_crc32,
            checksum_crc32c: input.checksum_crc32c,
            checksum_sha1: input.checksum_sha1,
            checksum_sha256: input.checksum_sha256,
            checksum_crc64nvme: input.checksum_crc64nvme,
            ..Default::default()
        };
        let got =
            receive(input.body, input.content_md5.as_deref(), input.checksum_algorithm.as_ref(), declared, req.trailing_headers.as_ref()).await?;
        let etag = hex::encode(got.md5);
        {
            let mut state = self.write();
            // Aborted while the body was arriving?
            let upload = state.uploads.get_mut(&input.upload_id).ok_or_else(|| s3_error!(NoSuchUpload))?;
            upload.parts.insert(input.part_number, StoredPart { body: got.body, md5: got.md5, modified: SystemTime::now() });
        }
        let c = got.checksum;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            checksum_crc64nvme: c.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(&self, req: S3Request<CompleteMultipartUploadInput>) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let listed = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(MalformedXML, "You must specify at least one part"));
        }
        let mut state = self.write();
        let upload = state.uploads.get(&input.upload_id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        if upload.bucket != input.bucket || upload.key != input.key {
            return Err(s3_error!(NoSuchUpload));
        }
        let mut previous = 0;
        let mut total = 0usize;
        let mut md5s = Md5::new();
        for (i, p) in listed.iter().enumerate() {
            let n = p.part_number.ok_or_else(|| s3_error!(InvalidPart, "a part without a number"))?;
            if n <= previous {
                return Err(s3_error!(InvalidPartOrder));
            }
            previous = n;
            let part = upload.parts.get(&n).ok_or_else(|| s3_error!(InvalidPart, "part {n} was not uploaded"))?;
            if let Some(e) = &p.e_tag
                && e.value() != hex::encode(part.md5)
            {
                return Err(s3_error!(InvalidPart, "part {n}: ETag does not match"));
            }
            if i + 1 < listed.len() && part.body.len() < MIN_PART_SIZE {
                return Err(s3_error!(EntityTooSmall, "part {n} is smaller than 5 MiB and not the last"));
            }
            md5s.update(&part.md5);
            total += part.body.len();
        }
        let bucket = state.buckets.get(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?;
        check_write_conditions(bucket.objects.get(&input.key), input.if_match.as_ref(), input.if_none_match.as_ref())?;

        let upload = state.uploads.remove(&input.upload_id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        let mut body = BytesMut::with_capacity(total);
        for p in &listed {
            if let Some(part) = p.part_number.and_then(|n| upload.parts.get(&n)) {
                body.extend_from_slice(&part.body);
            }
        }
        let etag = format!("{}-{}", hex::encode(md5s.finalize()), listed.len());
        let object = StoredObject { body: body.freeze(), etag: etag.clone(), modified: SystemTime::now(), attrs: upload.attrs, checksum: None };
        state.buckets.get_mut(&input.bucket).ok_or_else(|| s3_error!(NoSuchBucket))?.objects.insert(input.key.clone(), object);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(&self, req: S3Request<AbortMultipartUploadInput>) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        self.write().uploads.remove(&input.upload_id);
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.upload(&input.upload_id, &input.bucket, &input.key)?;
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = input.part_number_marker.unwrap_or(0);
        let state = self.read();
        let upload = state.uploads.get(&input.upload_id).ok_or_else(|| s3_error!(NoSuchUpload))?;
        let mut parts: Vec<Part> = Vec::new();
        let mut truncated = false;
        for (n, p) in upload.parts.range(after.saturating_add(1)..) {
            if parts.len() >= max {
                truncated = true;
                break;
            }
            parts.push(Part {
                part_number: Some(*n),
                size: Some(p.body.len() as i64),
                e_tag: Some(ETag::Strong(hex::encode(p.md5))),
                last_modified: Some(Timestamp::from(p.modified)),
                ..Default::default()
            });
        }
        let next = if truncated { parts.last().and_then(|p| p.part_number) } else { None };
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }
}

impl MemoryStore {
    /// The upload exists and is for this bucket and key.
    fn upload(&self, id: &str, bucket: &str, key: &str) -> S3Result<()> {
        let state = self.read();
        match state.uploads.get(id) {
            Some(u) if u.bucket == bucket && u.key == key => Ok(()),
            _ => Err(s3_error!(NoSuchUpload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(keys: &[&str]) -> BTreeMap<String, StoredObject> {
        keys.iter()
            .map(|k| {
                let o = StoredObject { body: Bytes::new(), etag: String::new(), modified: SystemTime::UNIX_EPOCH, attrs: None, checksum: None };
                (k.to_string(), o)
            })
            .collect()
    }

    fn names(p: &Page) -> (Vec<String>, Vec<String>) {
        (p.objects.iter().filter_map(|o| o.key.clone()).collect(), p.prefixes.clone())
    }

    /// Pages through a listing, one item per page, feeding back `last` as the marker.
    fn walk(objects: &BTreeMap<String, StoredObject>, prefix: &str, delimiter: Option<&str>, per_page: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = list_page(objects, prefix, delimiter, marker.as_deref(), per_page);
            let (keys, prefixes) = names(&page);
            let mut items: Vec<String> = keys.into_iter().chain(prefixes).collect();
            items.sort();
            out.extend(items);
            if !page.truncated {
                return out;
            }
            marker = page.last;
            assert!(marker.is_some(), "a truncated page names where to resume");
        }
    }

    #[test]
    fn delimiters_roll_keys_into_common_prefixes_across_pages() {
        let s = store(&["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "d", "e/", "e/x"]);
        let (keys, prefixes) = names(&list_page(&s, "", Some("/"), None, 1000));
        assert_eq!(keys, ["b", "d"]);
        assert_eq!(prefixes, ["a/", "c/", "e/"]);
        for per_page in 1..=4 {
            assert_eq!(walk(&s, "", Some("/"), per_page), ["a/", "b", "c/", "d", "e/"], "{per_page} per page");
            assert_eq!(walk(&s, "", None, per_page).len(), 9);
        }
        let (keys, prefixes) = names(&list_page(&s, "a/", Some("/"), None, 1000));
        assert_eq!((keys, prefixes), (vec!["a/1".to_string(), "a/2".to_string()], vec!["a/b/".to_string()]));
        // A page that ends exactly at the last item is not truncated.
        let p = list_page(&s, "c/", None, None, 2);
        assert!(!p.truncated);
        let p = list_page(&s, "c/", None, None, 1);
        assert!(p.truncated);
        assert_eq!(p.last.as_deref(), Some("c/1"));
        // start-after before the prefix starts at the prefix; after it, skips.
        assert_eq!(names(&list_page(&s, "c/", None, Some("a"), 10)).0, ["c/1", "c/2"]);
        assert_eq!(names(&list_page(&s, "c/", None, Some("c/1"), 10)).0, ["c/2"]);
        assert_eq!(names(&list_page(&s, "", None, Some("zz"), 10)).0, Vec::<String>::new());
        assert_eq!(list_page(&s, "", None, None, 0).objects.len(), 0);
    }

    #[test]
    fn prefix_ends_bound_every_key_with_the_prefix() {
        assert_eq!(prefix_end("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(url_encode("wals/0001 a+b%é"), "wals/0001%20a%2Bb%25%C3%A9");
    }
}
