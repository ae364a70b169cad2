//! The HTTP surface: request log and faults first, then routing of
//! `/api/v1/[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]` and
//! `/apis/{group}/{version}/...` (plus the legacy `/watch/` prefix) and discovery, then the
//! verbs. Every failure is a `Status` body; nothing in here panics on client input.

use super::Fault;
use super::Shared;
use super::access;
use super::patch::PatchType;
use super::registry::{self, DeleteOpts, Target};
use super::resources::{self, PODS, ResId, res};
use super::select::{FieldSelector, LabelSelector};
use super::status::{ApiError, ApiResult, Cause, json_response};
use super::streams::{self, LogReq, WatchReq};
use super::table::{Include, table};
use super::util::{b64_decode, b64_encode, meta_str, parse_query, percent_decode};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Request bodies above this are refused (the API server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub fn router(sh: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(sh)
}

async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().as_str().to_string();
    let path_q = req.uri().path_and_query().map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let fault = {
        let mut st = sh.lock();
        st.requests.push((method.clone(), path_q.clone()));
        take_fault(&mut st.faults, &method, &path_q)
    };
    if let Some(f) = fault {
        return fault_response(&sh, &f, req.method(), req.uri().path()).await;
    }
    match serve(&sh, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn take_fault(faults: &mut Vec<(Fault, u32)>, method: &str, path_q: &str) -> Option<Fault> {
    let i =
        faults.iter().position(|(f, _)| path_q.contains(&f.path_contains) && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method)))?;
    let f = faults[i].0.clone();
    if f.times > 0 {
        faults[i].1 -= 1;
        if faults[i].1 == 0 {
            faults.remove(i);
        }
    }
    Some(f)
}

fn verb(method: &Method, route: &ResRoute, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if route.name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if route.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "get",
    }
}

/// The Status an injected fault answers with, worded like the real one for the request.
async fn fault_response(sh: &Arc<Shared>, f: &Fault, method: &Method, path: &str) -> Response {
    if f.hang {
        let mut sd = sh.shutdown.clone();
        let _ = sd.wait_for(|s| *s).await;
        return ApiError::new(503, "ServiceUnavailable", "the server is shutting down").into_response();
    }
    let route = match parse_route(path) {
        Ok(Route::Res(r)) => Some(r),
        _ => None,
    };
    let (r, name) = match &route {
        Some(rt) => (Some(res(rt.id)), rt.name.clone().unwrap_or_default()),
        None => (None, String::new()),
    };
    let details = r.map(|r| {
        let mut d = json!({"name": name, "kind": r.plural});
        if !r.group.is_empty() {
            d["group"] = json!(r.group);
        }
        d
    });
    let e = match f.status {
        400 => ApiError::bad_request("bad request (injected fault)"),
        401 => ApiError::new(401, "Unauthorized", "Unauthorized"),
        403 => match &route {
            Some(rt) => forbidden(rt, verb(method, rt, false)),
            None => ApiError::new(
                403,
                "Forbidden",
                format!("forbidden: User \"{}\" cannot {} path \"{path}\"", access::USER, method.as_str().to_ascii_lowercase()),
            ),
        },
        404 => match (r, name.is_empty()) {
            (Some(r), false) => ApiError::not_found(r, &name),
            _ => ApiError::no_route(),
        },
        409 => match r {
            Some(r) => ApiError::conflict(r, &name),
            None => ApiError::new(409, "Conflict", "conflict (injected fault)"),
        },
        410 => ApiError::gone("too old resource version (injected fault)"),
        422 => {
            let (kind, group) = r.map_or(("Object", ""), |r| (r.kind, r.group));
            ApiError::invalid(kind, group, &name, vec![Cause::invalid("spec", "<injected>", "rejected by an injected fault")])
        }
        429 if path.ends_with("/eviction") => ApiError::new(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.")
            .with_details(json!({"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {} needs 1 healthy pods and has 1 currently", if name.is_empty() { "pdb".into() } else { format!("{name}-pdb") })}]})),
        429 => {
            let mut e = ApiError::new(429, "TooManyRequests", "Too many requests, please try again later.")
                .with_details(json!({"retryAfterSeconds": 1}));
            e.retry_after = Some(1);
            e
        }
        500 => ApiError::internal("injected fault"),
        503 => ApiError::new(503, "ServiceUnavailable", "the server is currently unable to handle the request"),
        504 => ApiError::new(504, "Timeout", "Timeout: request did not complete within requested timeout - context deadline exceeded"),
        code => ApiError::new(code, "Unknown", format!("injected fault {code}")),
    };
    let mut e = e;
    if e.details.is_none() && matches!(f.status, 403 | 500 | 503) {
        e.details = details;
    }
    e.into_response()
}

/// 403 as the API server words it: `deployments.apps "web" is forbidden: User "..." cannot
/// patch resource "deployments/scale" in API group "apps" in the namespace "ns"`.
fn forbidden(rt: &ResRoute, verb: &str) -> ApiError {
    let rr = res(rt.id);
    let gr = rr.group_resource();
    let named = match &rt.name {
        Some(n) => format!("{gr} \"{n}\""),
        None => gr,
    };
    let resource = match &rt.sub {
        Some(s) => format!("{}/{s}", rr.plural),
        None => rr.plural.to_string(),
    };
    let scope = match &rt.ns {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let mut d = json!({"name": rt.name.clone().unwrap_or_default(), "kind": rr.plural});
    if !rr.group.is_empty() {
        d["group"] = json!(rr.group);
    }
    ApiError::new(
        403,
        "Forbidden",
        format!("{named} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}", access::USER, rr.group),
    )
    .with_details(d)
}

/// The access policy's verdict on a resource request; 403 when it is not allowed.
fn authorize(sh: &Shared, rt: &ResRoute, method: &Method, watch: bool) -> ApiResult<()> {
    let verb = verb(method, rt, watch);
    let rr = res(rt.id);
    let a = access::Attributes {
        verb: verb.to_string(),
        path: None,
        group: rr.group.to_string(),
        resource: rr.plural.to_string(),
        sub: rt.sub.clone(),
        namespace: rt.ns.clone().unwrap_or_default(),
    };
    if sh.lock().access.decide(&a).allowed { Ok(()) } else { Err(forbidden(rt, verb)) }
}

// ------------------------------------------------------------------ routing

#[derive(Debug, Clone)]
struct ResRoute {
    id: ResId,
    /// The URL's namespace (None: all namespaces, or a cluster-scoped type).
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    /// `/api/v1/watch/...` (deprecated form of `?watch=true`).
    watch_prefix: bool,
}

enum Route {
    Root,
    Version,
    Health,
    Api,
    Apis,
    Group(String),
    GroupVersion(String, String),
    /// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews` (never stored).
    AccessReview,
    Res(ResRoute),
}

fn parse_route(path: &str) -> ApiResult<Route> {
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(|s| percent_decode(s, false)).collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (group, version, rest) = match s.as_slice() {
        [] => return Ok(Route::Root),
        ["version"] => return Ok(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Ok(Route::Health),
        ["api"] => return Ok(Route::Api),
        ["apis"] => return Ok(Route::Apis),
        ["api", v] => return Ok(Route::GroupVersion(String::new(), (*v).to_string())),
        ["apis", g] => return Ok(Route::Group((*g).to_string())),
        ["apis", g, v] => return Ok(Route::GroupVersion((*g).to_string(), (*v).to_string())),
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] => return Ok(Route::AccessReview),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route()),
    };
    let (watch_prefix, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let find = |p: &str| resources::find(group, version, p);
    // namespaces/{ns}/{resource}[/{name}[/{sub}]]
    if let ["namespaces", ns, r, more @ ..] = rest
        && let Some(id) = find(r).filter(|id| res(*id).namespaced)
    {
        let (name, sub) = match more {
            [] => (None, None),
            [n] => (Some(*n), None),
            [n, sub] => (Some(*n), Some(*sub)),
            _ => return Err(ApiError::no_route()),
        };
        if let Some(sub) = sub
            && !res(id).has_sub(sub)
        {
            return Err(ApiError::no_route());
        }
        return Ok(Route::Res(ResRoute { id, ns: Some((*ns).to_string()), name: name.map(String::from), sub: sub.map(String::from), watch_prefix }));
    }
    // {resource}[/{name}[/{sub}]] — cluster-scoped types, or all namespaces (list/watch only).
    let (r, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, sub] => (*r, Some(*n), Some(*sub)),
        _ => return Err(ApiError::no_route()),
    };
    let id = find(r).ok_or_else(ApiError::no_route)?;
    if res(id).namespaced && name.is_some() {
        return Err(ApiError::no_route());
    }
    if let Some(sub) = sub
        && !res(id).has_sub(sub)
    {
        return Err(ApiError::no_route());
    }
    Ok(Route::Res(ResRoute { id, ns: None, name: name.map(String::from), sub: sub.map(String::from), watch_prefix }))
}

// ------------------------------------------------------------------ serving

struct Query(HashMap<String, String>);

impl Query {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1" | "True"))
    }
    fn num<T: std::str::FromStr>(&self, k: &str) -> ApiResult<Option<T>> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| ApiError::bad_request(format!("invalid {k} {v:?}: must be an integer"))),
        }
    }
}

fn ok_json(code: u16, v: &Value) -> ApiResult<Response> {
    Ok(json_response(code, v))
}

async fn serve(sh: &Arc<Shared>, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let route = parse_route(parts.uri.path())?;
    let q = Query(parse_query(parts.uri.query().unwrap_or("")).into_iter().collect());
    let read_only = parts.method == Method::GET;
    match route {
        Route::Res(r) => {
            authorize(sh, &r, &parts.method, r.watch_prefix || q.flag("watch"))?;
            resource(sh, r, &parts.method, &q, &parts.headers, body).await
        }
        Route::AccessReview if parts.method == Method::POST => {
            check_body_type(&parts.headers)?;
            let b = require_body(read_body(body).await?)?;
            let out = access::review(&sh.lock().access, &b)?;
            ok_json(201, &out)
        }
        Route::AccessReview => Err(ApiError::method_not_allowed()),
        _ if !read_only => Err(ApiError::method_not_allowed()),
        Route::Root => ok_json(
            200,
            &json!({"paths": ["/api", "/api/v1", "/apis", "/apis/apps/v1", "/apis/authorization.k8s.io", "/apis/authorization.k8s.io/v1", "/apis/autoscaling/v1", "/apis/batch/v1", "/apis/coordination.k8s.io/v1", "/apis/policy/v1", "/healthz", "/livez", "/readyz", "/version"]}),
        ),
        Route::Version => ok_json(200, &resources::version()),
        Route::Health => Ok("ok".into_response()),
        Route::Api => ok_json(200, &resources::api_versions(&sh.addr)),
        Route::Apis => ok_json(200, &resources::api_group_list()),
        Route::Group(g) => ok_json(200, &resources::api_group(&g).ok_or_else(ApiError::no_route)?),
        Route::GroupVersion(g, v) => ok_json(200, &resources::resource_list(&g, &v).ok_or_else(ApiError::no_route)?),
    }
}

/// JSON only: protobuf and CBOR bodies get 415 (client-go then falls back to JSON).
fn check_body_type(headers: &HeaderMap) -> ApiResult<()> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.contains("protobuf") || ct.contains("cbor") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct:?})"
            ),
        ));
    }
    Ok(())
}

async fn read_body(body: Body) -> ApiResult<Value> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::new(413, "RequestEntityTooLarge", "the request body is too large (limit 3 MiB)"))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e} (the sandbox API server accepts JSON bodies only)"))
    })
}

fn require_body(v: Value) -> ApiResult<Value> {
    if v.is_null() { Err(ApiError::bad_request("the body of the request was empty")) } else { Ok(v) }
}

fn table_include(headers: &HeaderMap, q: &Query) -> Option<Include> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    // The first acceptable media type wins; kubectl lists the Table types first.
    let first = accept.split(',').next().unwrap_or("");
    first.contains("as=Table").then(|| Include::parse(q.get("includeObject")))
}

/// Metadata-only reads: `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`
/// (get, watch) or `...;as=PartialObjectMetadataList;...` (list). Media types are tried in
/// order, protobuf/CBOR ones skipped (JSON only); `want` selects the metadata representation,
/// a plain type (`application/json`, `*/*`, ...) or a Table the full object. A metadata
/// representation this endpoint cannot produce (a `...List` for a get) with no fallback is
/// 406 NotAcceptable, as the API server answers.
fn metadata_only(headers: &HeaderMap, want: &str) -> ApiResult<bool> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut refused = false;
    for media in accept.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let mut parts = media.split(';').map(str::trim);
        let mt = parts.next().unwrap_or("").to_ascii_lowercase();
        if mt.contains("protobuf") || mt.contains("cbor") {
            continue;
        }
        let params: HashMap<String, String> =
            parts.filter_map(|p| p.split_once('=')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string())).collect();
        match params.get("as").map(String::as_str) {
            None => return Ok(false),
            Some("Table") => return Ok(false),
            Some(a)
                if a == want
                    && params.get("g").map(String::as_str) == Some("meta.k8s.io")
                    && matches!(params.get("v").map(String::as_str), Some("v1" | "v1beta1")) =>
            {
                return Ok(true);
            }
            Some(a) if a.starts_with("PartialObjectMetadata") => refused = true,
            Some(_) => {}
        }
    }
    if refused {
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ));
    }
    Ok(false)
}

fn dry_run(q: &Query) -> ApiResult<bool> {
    match q.get("dryRun") {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!("dryRun: Unsupported value: {v:?}: supported values: \"All\""))),
    }
}

async fn resource(sh: &Arc<Shared>, r: ResRoute, method: &Method, q: &Query, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    let id = r.id;
    let ns = r.ns.clone().unwrap_or_default();
    let watch = r.watch_prefix || q.flag("watch");
    let tbl = table_include(headers, q);
    let dry = dry_run(q)?;
    let name = r.name.clone();
    let sub = r.sub.as_deref();
    // A namespaced type addressed without a namespace: only list/watch across namespaces.
    let all_ns = res(id).namespaced && r.ns.is_none();
    if *method != Method::GET {
        check_body_type(headers)?;
    }
    let resp = match (method.clone(), name.as_deref(), sub) {
        (Method::GET, None, None) => {
            if watch {
                let meta = tbl.is_none() && metadata_only(headers, "PartialObjectMetadata")?;
                return watch_req(sh, &r, q, tbl, None, meta);
            }
            let meta = tbl.is_none() && metadata_only(headers, "PartialObjectMetadataList")?;
            list(sh, &r, q, tbl, meta)
        }
        (Method::GET, Some(n), None) => {
            let meta = tbl.is_none() && metadata_only(headers, "PartialObjectMetadata")?;
            if watch {
                return watch_req(sh, &r, q, tbl, Some(n), meta);
            }
            let obj = sh.lock().store.get(id, &ns, n).cloned().ok_or_else(|| ApiError::not_found(res(id), n))?;
            if meta {
                return ok_json(200, &streams::partial_metadata(&obj));
            }
            match tbl {
                Some(inc) => ok_json(200, &table(id, &[&obj], inc, true, json!({"resourceVersion": meta_str(&obj, "resourceVersion")}))),
                None => ok_json(200, &obj),
            }
        }
        (Method::GET, Some(n), Some("status")) => {
            let obj = sh.lock().store.get(id, &ns, n).cloned().ok_or_else(|| ApiError::not_found(res(id), n))?;
            ok_json(200, &obj)
        }
        (Method::GET, Some(n), Some("scale")) => ok_json(200, &registry::get_scale(&sh.lock(), id, &ns, n)?),
        (Method::GET, Some(n), Some("log")) if id == PODS => {
            let pod = sh.lock().store.get(id, &ns, n).cloned().ok_or_else(|| ApiError::not_found(res(id), n))?;
            let lq = LogReq {
                tail_lines: q.num::<i64>("tailLines")?.map(|n| n.max(0) as usize),
                since_seconds: q.num("sinceSeconds")?,
                timestamps: q.flag("timestamps"),
                limit_bytes: q.num::<i64>("limitBytes")?.map(|n| n.max(0) as usize),
                follow: q.flag("follow"),
            };
            return streams::logs(sh, &pod, q.get("container"), q.flag("previous"), lq);
        }
        (Method::POST, None, None) if !all_ns => {
            let obj = require_body(read_body(body).await?)?;
            let out = registry::create(&mut sh.lock(), id, &ns, obj, dry)?;
            ok_json(201, &out)
        }
        (Method::POST, Some(n), Some("eviction")) if id == PODS => {
            let b = read_body(body).await?;
            let out = registry::evict(&mut sh.lock(), &ns, n, &b, dry)?;
            ok_json(201, &out)
        }
        (Method::PUT, Some(n), None | Some("status")) => {
            let obj = require_body(read_body(body).await?)?;
            let target = if sub == Some("status") { Target::Status } else { Target::Main };
            let out = registry::replace(&mut sh.lock(), id, &ns, n, obj, target, dry)?;
            ok_json(200, &out)
        }
        (Method::PUT, Some(n), Some("scale")) => {
            let obj = require_body(read_body(body).await?)?;
            ok_json(200, &registry::replace_scale(&mut sh.lock(), id, &ns, n, obj, dry)?)
        }
        (Method::PATCH, Some(n), sub @ (None | Some("status") | Some("scale"))) => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let pt = PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media(ct))?;
            let patch = require_body(read_body(body).await?)?;
            if sub == Some("scale") {
                ok_json(200, &registry::patch_scale(&mut sh.lock(), id, &ns, n, pt, &patch, dry)?)
            } else {
                let target = if sub == Some("status") { Target::Status } else { Target::Main };
                let (out, created) = registry::patch(&mut sh.lock(), id, &ns, n, pt, &patch, target, q.get("fieldManager"), dry)?;
                ok_json(if created { 201 } else { 200 }, &out)
            }
        }
        (Method::DELETE, Some(n), None) => {
            let b = read_body(body).await?;
            let mut opts = DeleteOpts { grace_period: q.num("gracePeriodSeconds")?, ..Default::default() };
            opts.merge_body(&b);
            let dry = dry || b.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All"));
            let (code, out) = registry::delete(&mut sh.lock(), id, &ns, n, &opts, dry)?;
            ok_json(code, &out)
        }
        (Method::DELETE, None, None) if !all_ns => {
            let b = read_body(body).await?;
            let mut opts = DeleteOpts { grace_period: q.num("gracePeriodSeconds")?, ..Default::default() };
            opts.merge_body(&b);
            delete_collection(sh, &r, q, &opts, dry)
        }
        _ => Err(ApiError::method_not_allowed()),
    };
    if resp.is_ok() && *method != Method::GET {
        sh.notify.notify_one();
    }
    resp
}

fn selectors(r: &ResRoute, q: &Query) -> ApiResult<(LabelSelector, FieldSelector)> {
    Ok((LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?, FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), res(r.id))?))
}

fn watch_req(sh: &Arc<Shared>, r: &ResRoute, q: &Query, tbl: Option<Include>, name: Option<&str>, metadata: bool) -> ApiResult<Response> {
    let (labels, mut fields) = selectors(r, q)?;
    if let Some(n) = name {
        if !fields.is_empty() {
            return Err(ApiError::bad_request("a watch of a single object cannot have a field selector"));
        }
        fields = FieldSelector::name(n);
    }
    streams::watch(
        sh,
        WatchReq {
            id: r.id,
            ns: if res(r.id).namespaced { r.ns.clone() } else { None },
            labels,
            fields,
            resource_version: q.get("resourceVersion").map(String::from),
            bookmarks: q.flag("allowWatchBookmarks"),
            send_initial: q.flag("sendInitialEvents"),
            timeout: q.num::<u64>("timeoutSeconds")?.filter(|s| *s > 0).map(Duration::from_secs),
            table: tbl,
            metadata,
        },
    )
}

/// `continue` token: base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"ns/name\u0000"}` like the
/// etcd3 store's.
fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    b64_encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{ns}/{name}\u{0}")}).to_string().as_bytes())
}

fn decode_continue(token: &str) -> ApiResult<(u64, String, String)> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let bytes = b64_decode(token).ok_or_else(bad)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad());
    }
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?.trim_end_matches('\u{0}');
    let (ns, name) = start.split_once('/').ok_or_else(bad)?;
    Ok((rv, ns.to_string(), name.to_string()))
}

fn list(sh: &Arc<Shared>, r: &ResRoute, q: &Query, tbl: Option<Include>, metadata: bool) -> ApiResult<Response> {
    let (labels, fields) = selectors(r, q)?;
    let limit = q.num::<i64>("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let cont = match q.get("continue") {
        Some(t) if !t.is_empty() => Some(decode_continue(t)?),
        _ => None,
    };
    let rr = res(r.id);
    let st = sh.lock();
    let ns = if rr.namespaced { r.ns.as_deref() } else { None };
    let list_rv = match &cont {
        Some((rv, _, _)) => {
            if *rv < st.store.compacted() {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            *rv
        }
        None => st.store.rv(),
    };
    let matching: Vec<&Value> = match &cont {
        Some((_, cns, cname)) => {
            st.store.list_after(r.id, ns, (cns.clone(), cname.clone())).filter(|o| labels.matches(o) && fields.matches(o)).collect()
        }
        None => st.store.list(r.id, ns).filter(|o| labels.matches(o) && fields.matches(o)).collect(),
    };
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    let page: &[&Value] = match limit {
        Some(l) if matching.len() > l => {
            let last = matching[l - 1];
            meta["continue"] = json!(encode_continue(list_rv, meta_str(last, "namespace"), meta_str(last, "name")));
            if labels.is_empty() && fields.is_empty() {
                meta["remainingItemCount"] = json!(matching.len() - l);
            }
            &matching[..l]
        }
        _ => &matching,
    };
    if let Some(inc) = tbl {
        return ok_json(200, &table(r.id, page, inc, true, meta));
    }
    if metadata {
        let items: Vec<Value> = page.iter().map(|o| streams::partial_metadata(o)).collect();
        return ok_json(200, &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}));
    }
    let items: Vec<Value> = page
        .iter()
        .map(|o| {
            let mut o = (*o).clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    ok_json(200, &json!({"kind": format!("{}List", rr.kind), "apiVersion": rr.api_version(), "metadata": meta, "items": items}))
}

fn delete_collection(sh: &Arc<Shared>, r: &ResRoute, q: &Query, opts: &DeleteOpts, dry: bool) -> ApiResult<Response> {
    let (labels, fields) = selectors(r, q)?;
    let rr = res(r.id);
    let ns = r.ns.clone().unwrap_or_default();
    let mut st = sh.lock();
    let names: Vec<String> = st
        .store
        .list(r.id, if rr.namespaced { Some(ns.as_str()) } else { None })
        .filter(|o| labels.matches(o) && fields.matches(o))
        .map(|o| meta_str(o, "name").to_string())
        .collect();
    let mut items = Vec::new();
    for n in names {
        let (_, out) = registry::delete(&mut st, r.id, &ns, &n, opts, dry)?;
        if out["kind"] != "Status" {
            items.push(out);
        }
    }
    let rv = st.store.rv().to_string();
    ok_json(200, &json!({"kind": format!("{}List", rr.kind), "apiVersion": rr.api_version(), "metadata": {"resourceVersion": rv}, "items": items}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{DEPLOYMENTS, NAMESPACES};

    fn res_route(p: &str) -> ResRoute {
        match parse_route(p) {
            Ok(Route::Res(r)) => r,
            _ => panic!("{p} is not a resource route"),
        }
    }

    #[test]
    fn routes() {
        let r = res_route("/api/v1/namespaces/ns/pods/p1/log");
        assert_eq!((r.id, r.ns.as_deref(), r.name.as_deref(), r.sub.as_deref()), (PODS, Some("ns"), Some("p1"), Some("log")));
        let r = res_route("/apis/apps/v1/namespaces/ns/deployments/web/scale");
        assert_eq!((r.id, r.sub.as_deref()), (DEPLOYMENTS, Some("scale")));
        let r = res_route("/api/v1/pods");
        assert_eq!((r.id, r.ns.as_deref(), r.name.as_deref()), (PODS, None, None));
        let r = res_route("/api/v1/namespaces/ns");
        assert_eq!((r.id, r.name.as_deref()), (NAMESPACES, Some("ns")));
        let r = res_route("/api/v1/namespaces/ns/status");
        assert_eq!((r.id, r.name.as_deref(), r.sub.as_deref()), (NAMESPACES, Some("ns"), Some("status")));
        let r = res_route("/api/v1/watch/namespaces/ns/pods");
        assert!(r.watch_prefix);
        for bad in ["/api/v1/namespaces/ns/pods/p/frob", "/api/v1/nothing", "/apis/apps/v2/deployments", "/api/v1/pods/p", "/x"] {
            assert!(parse_route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn continue_tokens() {
        let t = encode_continue(42, "ns", "p-1");
        assert_eq!(decode_continue(&t).unwrap(), (42, "ns".into(), "p-1".into()));
        assert_eq!(decode_continue("garbage!").unwrap_err().code, 400);
    }

    #[test]
    fn faults_count_down() {
        let mut f = vec![(Fault { path_contains: "/pods".into(), status: 500, times: 2, method: Some("get".into()), hang: false }, 2)];
        assert!(take_fault(&mut f, "POST", "/api/v1/namespaces/a/pods").is_none());
        assert!(take_fault(&mut f, "GET", "/api/v1/namespaces/a/pods").is_some());
        assert!(take_fault(&mut f, "GET", "/api/v1/namespaces/a/pods?x").is_some());
        assert!(take_fault(&mut f, "GET", "/api/v1/namespaces/a/pods").is_none());
    }
}
