//! The in-memory backend of the sandbox S3 server, through aws-sdk-s3 over loopback (SigV4):
//! its listings match the s3s-fs backend's for the same objects (prefixes, delimiters, page
//! sizes, start-after), and the writes barman-cloud's boto3 makes — conditional puts, multipart
//! uploads, batch deletes, ranged reads — behave as on S3.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use runbot_adapters::backup::S3Config;
use runbot_sandbox::s3;

fn client(server: &s3::S3Server, secret: &str) -> aws_sdk_s3::Client {
    S3Config::new(Some(server.url()), s3::REGION, s3::ACCESS_KEY, secret).client().unwrap()
}

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    c.put_object().bucket(bucket).key(key).body(ByteStream::from(body.to_vec())).send().await.unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

/// Every key and common prefix of a listing, page by page (`max_keys` per page).
async fn list_all(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    max_keys: i32,
    start_after: Option<&str>,
) -> (Vec<String>, Vec<String>, usize) {
    let (mut keys, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut token: Option<String> = None;
    loop {
        let mut req = c.list_objects_v2().bucket(bucket).prefix(prefix).max_keys(max_keys);
        if let Some(d) = delimiter {
            req = req.delimiter(d);
        }
        if let Some(s) = start_after {
            req = req.start_after(s);
        }
        if let Some(t) = token.take() {
            req = req.continuation_token(t);
        }
        let page = req.send().await.unwrap();
        pages += 1;
        assert!(page.key_count().unwrap_or(0) <= max_keys);
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        prefixes.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_owned)));
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => return (keys, prefixes, pages),
        }
        assert!(pages < 10_000, "listing does not end");
    }
}

#[tokio::test]
async fn listings_match_the_directory_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = s3::start(tmp.path()).unwrap();
    let mem = s3::start_in_memory().unwrap();
    assert!(mem.root().is_none() && mem.memory().is_some() && fs.memory().is_none());
    let (cf, cm) = (client(&fs, s3::SECRET_KEY), client(&mem, s3::SECRET_KEY));
    let mut keys: Vec<String> = Vec::new();
    for srv in ["db-a", "db-b"] {
        for tli in 1..=3 {
            keys.push(format!("prod/{srv}/wals/0000000{tli}.history"));
            for seg in 0..23 {
                keys.push(format!("prod/{srv}/wals/0000000{tli}00000000/0000000{tli}00000000000000{seg:02X}.gz"));
            }
        }
        keys.push(format!("prod/{srv}/base/20260101T000000/backup.info"));
        keys.push(format!("prod/{srv}/base/20260101T000000/data.tar"));
    }
    keys.push("top-level".into());
    keys.push("prod/readme".into());
    for c in [&cf, &cm] {
        c.create_bucket().bucket("cmp").send().await.unwrap();
        for k in &keys {
            put(c, "cmp", k, b"x").await;
        }
    }
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        ("", None, None),
        ("", Some("/"), None),
        ("prod/", Some("/"), None),
        ("prod/db-a/", Some("/"), None),
        ("prod/db-a/wals/", Some("/"), None),
        ("prod/db-a/wals/", None, None),
        ("prod/db-b/wals/00000002", None, None),
        ("prod/db-", Some("/"), None),
        ("prod/", None, Some("prod/db-a/wals/0000000300000000/000000030000000000000010.gz")),
        ("prod/", Some("/"), Some("prod/db-a/")),
        ("nothing/", None, None),
    ];
    for (prefix, delimiter, start_after) in cases {
        for page in [1, 7, 1000] {
            let a = list_all(&cf, "cmp", prefix, *delimiter, page, *start_after).await;
            let b = list_all(&cm, "cmp", prefix, *delimiter, page, *start_after).await;
            assert_eq!(a.0, b.0, "keys: prefix {prefix:?} delimiter {delimiter:?} start-after {start_after:?} {page}/page");
            assert_eq!(a.1, b.1, "common prefixes: prefix {prefix:?} delimiter {delimiter:?} {page}/page");
            if page == 7 {
                assert_eq!(b.2, (b.0.len() + b.1.len()).div_ceil(7).max(1), "pages of 7");
            }
        }
    }
    // The whole bucket, in key order, with LastModified and sizes.
    let (all, _, _) = list_all(&cm, "cmp", "", None, 1000, None).await;
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    let page = cm.list_objects_v2().bucket("cmp").prefix("prod/db-a/base/").send().await.unwrap();
    let o = &page.contents()[0];
    assert_eq!((o.size(), o.e_tag()), (Some(1), Some("\"9dd4e461268c8034f5c8564e155c67a6\"")), "md5 of \"x\"");
    assert!(o.last_modified().is_some());

    // A missing bucket, a wrong secret.
    let e = cm.list_objects_v2().bucket("nope").send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("NoSuchBucket"));
    let e = client(&mem, "wrong-secret").list_objects_v2().bucket("cmp").send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("SignatureDoesNotMatch"));
}

#[tokio::test]
async fn objects_are_written_read_and_deleted_as_on_s3() {
    let mem = s3::start_in_memory().unwrap();
    mem.create_bucket("bk1").unwrap();
    assert!(mem.create_bucket("bk1").is_err(), "already exists");
    let c = client(&mem, s3::SECRET_KEY);
    c.head_bucket().bucket("bk1").send().await.unwrap();
    assert!(c.head_bucket().bucket("bk2").send().await.is_err());
    let names: Vec<String> = c.list_buckets().send().await.unwrap().buckets().iter().filter_map(|b| b.name().map(str::to_owned)).collect();
    assert_eq!(names, ["bk1"]);

    // Put, get (whole and ranged), head; metadata comes back.
    c.put_object()
        .bucket("bk1")
        .key("k/one")
        .content_type("text/plain")
        .metadata("owner", "dba")
        .body(ByteStream::from_static(b"0123456789"))
        .send()
        .await
        .unwrap();
    let got = c.get_object().bucket("bk1").key("k/one").send().await.unwrap();
    assert_eq!((got.content_type(), got.metadata().and_then(|m| m.get("owner")).map(String::as_str)), (Some("text/plain"), Some("dba")));
    assert_eq!(got.body.collect().await.unwrap().into_bytes().as_ref(), b"0123456789");
    let part = c.get_object().bucket("bk1").key("k/one").range("bytes=2-4").send().await.unwrap();
    assert_eq!(part.content_range(), Some("bytes 2-4/10"));
    assert_eq!(part.body.collect().await.unwrap().into_bytes().as_ref(), b"234");
    let head = c.head_object().bucket("bk1").key("k/one").send().await.unwrap();
    assert_eq!(head.content_length(), Some(10));
    let e = c.get_object().bucket("bk1").key("k/none").send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("NoSuchKey"));
    assert_eq!(mem.memory().unwrap().get("bk1", "k/one").as_deref(), Some(&b"0123456789"[..]));

    // If-None-Match: * refuses to overwrite (barman-cloud's fail_if_exists).
    let e = c.put_object().bucket("bk1").key("k/one").if_none_match("*").body(ByteStream::from_static(b"new")).send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("PreconditionFailed"));
    c.put_object().bucket("bk1").key("k/two").if_none_match("*").body(ByteStream::from_static(b"2")).send().await.unwrap();

    // Multipart: parts in order, 5 MiB minimum but for the last, the md5-of-md5s-N ETag.
    let big = vec![7u8; 5 * 1024 * 1024];
    let up = c.create_multipart_upload().bucket("bk1").key("base/data.tar").send().await.unwrap();
    let id = up.upload_id().unwrap().to_owned();
    let mut parts = Vec::new();
    for (n, body) in [(1, big.clone()), (2, b"tail".to_vec())] {
        let p = c.upload_part().bucket("bk1").key("base/data.tar").upload_id(&id).part_number(n).body(ByteStream::from(body)).send().await.unwrap();
        parts.push(CompletedPart::builder().part_number(n).e_tag(p.e_tag().unwrap()).build());
    }
    let listed = c.list_parts().bucket("bk1").key("base/data.tar").upload_id(&id).send().await.unwrap();
    assert_eq!(listed.parts().iter().map(|p| p.size().unwrap()).collect::<Vec<_>>(), [5 * 1024 * 1024, 4]);
    let done = c
        .complete_multipart_upload()
        .bucket("bk1")
        .key("base/data.tar")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .unwrap();
    assert!(done.e_tag().unwrap().ends_with("-2\""), "{:?}", done.e_tag());
    let body = c.get_object().bucket("bk1").key("base/data.tar").send().await.unwrap().body.collect().await.unwrap().into_bytes();
    assert_eq!(body.len(), big.len() + 4);
    assert!(body.starts_with(&big) && body.ends_with(b"tail"));
    let e = c.list_parts().bucket("bk1").key("base/data.tar").upload_id(&id).send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("NoSuchUpload"), "completed uploads are gone");

    // A small part that is not the last is refused; an aborted upload is gone.
    let up = c.create_multipart_upload().bucket("bk1").key("small").send().await.unwrap();
    let id = up.upload_id().unwrap().to_owned();
    let mut parts = Vec::new();
    for n in 1..=2 {
        let p = c.upload_part().bucket("bk1").key("small").upload_id(&id).part_number(n).body(ByteStream::from_static(b"tiny")).send().await.unwrap();
        parts.push(CompletedPart::builder().part_number(n).e_tag(p.e_tag().unwrap()).build());
    }
    let e = c
        .complete_multipart_upload()
        .bucket("bk1")
        .key("small")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("EntityTooSmall"));
    c.abort_multipart_upload().bucket("bk1").key("small").upload_id(&id).send().await.unwrap();
    let e = c.upload_part().bucket("bk1").key("small").upload_id(&id).part_number(3).body(ByteStream::from_static(b"x")).send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("NoSuchUpload"));
    assert!(mem.memory().unwrap().get("bk1", "small").is_none());

    // Batch and single deletes; a non-empty bucket cannot be deleted.
    let e = c.delete_bucket().bucket("bk1").send().await.unwrap_err();
    assert_eq!(e.into_service_error().meta().code(), Some("BucketNotEmpty"));
    let ids = ["k/one", "k/two", "k/never-existed"].map(|k| ObjectIdentifier::builder().key(k).build().unwrap());
    let out = c.delete_objects().bucket("bk1").delete(Delete::builder().set_objects(Some(ids.to_vec())).build().unwrap()).send().await.unwrap();
    assert_eq!(out.deleted().len(), 3);
    c.delete_object().bucket("bk1").key("base/data.tar").send().await.unwrap();
    assert_eq!(mem.memory().unwrap().object_count("bk1"), Some(0));
    c.delete_bucket().bucket("bk1").send().await.unwrap();
    assert!(c.head_bucket().bucket("bk1").send().await.is_err());
}

#[tokio::test]
async fn direct_inserts_are_listed_with_their_times() {
    let mem = s3::start_in_memory().unwrap();
    mem.create_bucket("fix").unwrap();
    let store = mem.memory().unwrap();
    let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_780_000_000);
    for i in 0..2500u64 {
        store.insert("fix", &format!("w/{i:06}"), &b"wal"[..], t0 + std::time::Duration::from_secs(i)).unwrap();
    }
    assert!(store.insert("nobucket", "k", &b""[..], t0).is_err());
    let c = client(&mem, s3::SECRET_KEY);
    let (keys, _, pages) = list_all(&c, "fix", "w/", None, 1000, None).await;
    assert_eq!((keys.len(), pages), (2500, 3));
    let page = c.list_objects_v2().bucket("fix").start_after("w/002498").send().await.unwrap();
    let o = &page.contents()[0];
    assert_eq!(o.key(), Some("w/002499"));
    assert_eq!(o.last_modified().map(|d| d.secs()), Some(1_780_000_000 + 2499));
}
