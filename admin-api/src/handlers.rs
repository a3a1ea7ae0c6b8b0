//! The Admin API's HTTP handlers: they turn requests into validated values and
//! conditional etcd writes, retrying when a concurrent writer got there first.
use crate::error::ApiError;
use crate::filter;
use crate::paging;
use crate::patch;
use crate::resource;
use crate::store::{DeleteOutcome, Entry, Expect, WriteOutcome};
use crate::{ids, App};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::Json;
use model::key::parse_key;
use model::{Id, Kind, ValidationError};
use rand::Rng;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type Result<T, E = ApiError> = std::result::Result<T, E>;
type Body = Result<Bytes, BytesRejection>;

/// How often a conditional write is retried after a concurrent change before giving up
/// with 409. Each retry re-reads, so no update is ever lost.
const ATTEMPTS: u32 = 10;
/// Users named in an "in use" error before "and N more".
const MAX_USERS_SHOWN: usize = 10;

pub async fn list(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<Value>> {
    let kind = kind_of(&path?.0)?;
    let mut accepted = vec!["page", "page_size"];
    accepted.extend(filter::PARAMS);
    let params = query(&uri, &accepted)?;
    let page = paging::parse(
        params.get("page").map(String::as_str),
        params.get("page_size").map(String::as_str),
    )?;
    let Some(filter) = filter::Filter::parse(&params)? else {
        let listing = app.store.list(kind, page).await?;
        let list: Vec<Value> = listing.entries.iter().map(|e| item(kind, e)).collect();
        return Ok(Json(json!({ "list": list, "total": listing.total })));
    };
    // Filtered: the whole kind is read, then paged, so that `total` counts the matches.
    let mut entries = app.store.list(kind, None).await?.entries;
    entries.retain(|e| filter.matches(&stored_json(&e.value)));
    let total = entries.len();
    if let Some(p) = page {
        let from = usize::try_from(p.offset()).unwrap_or(usize::MAX).min(total);
        let to = from.saturating_add(p.size as usize).min(total);
        entries = entries.drain(from..to).collect();
    }
    let list: Vec<Value> = entries.iter().map(|e| item(kind, e)).collect();
    Ok(Json(json!({ "list": list, "total": total })))
}

pub async fn get_one(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
) -> Result<Json<Value>> {
    let (kind, id) = kind_and_id(path?.0)?;
    query(&uri, &[])?;
    match app.store.get(&app.key(kind, &id)).await? {
        Some(entry) => Ok(Json(item(kind, &entry))),
        None => Err(not_found(kind, &id)),
    }
}

/// `PUT /{kind}/{id}`: create (201) or replace (200).
pub async fn put_with_id(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response> {
    let (kind, id) = kind_and_id(path?.0)?;
    let ttl = ttl(&query(&uri, &["ttl"])?, kind)?;
    let doc = object_body(&body?)?;
    resource::check_body_id(&doc, &id)?;
    put(&app, kind, id, doc, ttl).await
}

/// `PUT /{kind}` with the id in the body, as APISIX allows.
pub async fn put_without_id(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response> {
    let kind = kind_of(&path?.0)?;
    let ttl = ttl(&query(&uri, &["ttl"])?, kind)?;
    let doc = object_body(&body?)?;
    if resource::put_only(kind) {
        // APISIX's `PUT /consumers` names the consumer in the body.
        let username = doc
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = Id::parse(username).map_err(|e| ValidationError::new("username", e))?;
        return put(&app, kind, id, doc, ttl).await;
    }
    let id = resource::body_id(&doc)?.ok_or_else(|| {
        ValidationError::new(
            "id",
            format!(
                "is required with PUT /apisix/admin/{0}; or use PUT /apisix/admin/{0}/{{id}}, \
                 or POST to have one assigned",
                kind.as_str()
            ),
        )
    })?;
    put(&app, kind, id, doc, ttl).await
}

/// `?ttl=` (seconds): the resource is deleted by etcd when its lease expires (APISIX).
/// Only kinds that may expire take one (`resource::may_expire`).
fn ttl(params: &BTreeMap<String, String>, kind: Kind) -> Result<Option<i64>> {
    let Some(raw) = params.get("ttl") else {
        return Ok(None);
    };
    if !resource::may_expire(kind) {
        return Err(ValidationError::new(
            "ttl",
            format!(
                "{} cannot expire: what references them (or, for consumers, their \
                 credentials) would be left dangling",
                kind.as_str()
            ),
        )
        .into());
    }
    match raw.parse::<i64>() {
        Ok(n) if (1..=MAX_TTL).contains(&n) => Ok(Some(n)),
        _ => Err(ValidationError::new(
            "ttl",
            format!("invalid argument ttl: should be a number of seconds from 1 to {MAX_TTL}, got {raw:?}"),
        )
        .into()),
    }
}

/// A year: etcd's leases are meant for expiry, not for storage.
const MAX_TTL: i64 = 365 * 24 * 3600;

/// A lease for `ttl`, granted only once the body is known to be valid.
async fn lease(app: &App, ttl: Option<i64>) -> Result<Option<i64>> {
    match ttl {
        Some(t) => Ok(Some(app.store.grant(t).await?)),
        None => Ok(None),
    }
}

async fn put(
    app: &App,
    kind: Kind,
    id: Id,
    mut doc: Map<String, Value>,
    ttl: Option<i64>,
) -> Result<Response> {
    resource::fill_identity(kind, &mut doc, &id);
    // Validate before touching etcd: an invalid body is a 400 even while etcd is down.
    prepare(app, kind, &id, doc.clone(), None, now(), false)?;
    if kind == Kind::Consumers {
        unique_credentials(app, &app.key(kind, &id), &Value::Object(doc.clone())).await?;
    }
    let lease = lease(app, ttl).await?;
    let key = app.key(kind, &id);
    for attempt in 0..ATTEMPTS {
        let previous = app.store.get(&key).await?;
        let previous_value = previous.as_ref().map(|e| stored_json(&e.value));
        let (value, refs) = prepare(
            app,
            kind,
            &id,
            doc.clone(),
            previous_value.as_ref(),
            now(),
            false,
        )?;
        let expect = previous
            .as_ref()
            .map_or(Expect::Absent, |e| Expect::ModRevision(e.mod_revision));
        if let Some(revision) = write(app, &key, &value, expect, &refs, lease).await? {
            let status = match expect {
                Expect::Absent => StatusCode::CREATED,
                Expect::ModRevision(_) => StatusCode::OK,
            };
            let resp = (status, written(kind, &key, value));
            return Ok(crate::cluster::Written::at(revision, resp));
        }
        backoff(attempt).await;
    }
    Err(conflict(kind, &id))
}

/// `POST /{kind}`: the server picks a unique id.
pub async fn create(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response> {
    let kind = kind_of(&path?.0)?;
    let ttl = ttl(&query(&uri, &["ttl"])?, kind)?;
    if resource::put_only(kind) {
        return Err(put_only(kind));
    }
    if resource::no_post(kind) {
        return Err(ApiError::MethodNotAllowed(format!(
            "{} are created with PUT /apisix/admin/{0}/{{id}}, not POST, as in APISIX",
            kind.as_str()
        )));
    }
    let doc = object_body(&body?)?;
    if doc.contains_key("id") {
        return Err(ValidationError::new(
            "id",
            format!(
                "POST assigns the id; to choose one, use PUT /apisix/admin/{}/{{id}}",
                kind.as_str()
            ),
        )
        .into());
    }
    // Validate before the lease: an invalid body leaves nothing behind.
    prepare(
        &app,
        kind,
        &Id::parse("0").expect("a valid id"),
        doc.clone(),
        None,
        now(),
        false,
    )?;
    let lease = lease(&app, ttl).await?;
    for attempt in 0..ATTEMPTS {
        let id = Id::parse(&ids::generate())
            .map_err(|e| ApiError::BadRequest(format!("cannot generate an id: {e}")))?;
        let key = app.key(kind, &id);
        let (value, refs) = prepare(&app, kind, &id, doc.clone(), None, now(), false)?;
        // Create-only: two replicas that drew the same id cannot overwrite each other.
        if let Some(revision) = write(&app, &key, &value, Expect::Absent, &refs, lease).await? {
            let resp = (StatusCode::CREATED, written(kind, &key, value));
            return Ok(crate::cluster::Written::at(revision, resp));
        }
        tracing::warn!(%key, "generated id already taken, drawing another");
        backoff(attempt).await;
    }
    Err(ApiError::Conflict(
        "could not find a free id; try again".into(),
    ))
}

/// How a PATCH changes the stored document.
enum Change {
    /// RFC 7386 merge of the body into the document.
    Merge(Value),
    /// APISIX sub-path: the body replaces the value at this path.
    Replace(String, Value),
}

/// `PATCH /{kind}/{id}`: JSON merge patch.
pub async fn patch_merge(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response> {
    let (kind, id) = kind_and_id(path?.0)?;
    query(&uri, &[])?;
    let body = json_body(&body?)?;
    if !body.is_object() {
        return Err(ValidationError::new(
            "",
            "a PATCH body must be a JSON object (RFC 7386 merge patch); \
             to replace one field, PATCH /apisix/admin/{kind}/{id}/{field}",
        )
        .into());
    }
    patch(&app, kind, id, Change::Merge(body)).await
}

/// `PATCH /{kind}/{id}/{*path}`: replace the value at a path.
pub async fn patch_path(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response> {
    let (kind, id, sub_path) = path?.0;
    let (kind, id) = kind_and_id((kind, id))?;
    query(&uri, &[])?;
    let value = json_body(&body?)?;
    patch(&app, kind, id, Change::Replace(sub_path, value)).await
}

async fn patch(app: &App, kind: Kind, id: Id, change: Change) -> Result<Response> {
    if resource::put_only(kind) {
        return Err(put_only(kind));
    }
    let key = app.key(kind, &id);
    for attempt in 0..ATTEMPTS {
        let Some(current) = app.store.get(&key).await? else {
            return Err(not_found(kind, &id));
        };
        let previous = stored_json(&current.value);
        if !previous.is_object() {
            return Err(ApiError::BadRequest(format!(
                "the stored {} {id} is not a JSON object and cannot be patched; replace it with PUT",
                kind.singular()
            )));
        }
        let mut doc = previous.clone();
        let reset_update_time = match &change {
            Change::Merge(body) => {
                patch::merge(&mut doc, body);
                body.get("update_time").is_none()
            }
            Change::Replace(path, value) => {
                patch::set_path(&mut doc, path, value.clone()).map_err(ApiError::BadRequest)?;
                true
            }
        };
        let Value::Object(doc) = doc else {
            return Err(ValidationError::new("", "the body must be a JSON object").into());
        };
        resource::check_body_id(&doc, &id)?;
        let (value, refs) = prepare(
            app,
            kind,
            &id,
            doc,
            Some(&previous),
            now(),
            reset_update_time,
        )?;
        // Compare-and-swap on the revision we merged into: a concurrent change is re-read.
        // A patch keeps the resource's expiry (`?ttl=` when it was put).
        let lease = Some(current.lease).filter(|l| *l != 0);
        if let Some(revision) = write(
            app,
            &key,
            &value,
            Expect::ModRevision(current.mod_revision),
            &refs,
            lease,
        )
        .await?
        {
            let resp = (StatusCode::OK, written(kind, &key, value));
            return Ok(crate::cluster::Written::at(revision, resp));
        }
        tracing::debug!(%key, attempt, "concurrent change, patching again");
        backoff(attempt).await;
    }
    Err(conflict(kind, &id))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
) -> Result<Response> {
    let (kind, id) = kind_and_id(path?.0)?;
    let params = query(&uri, &["force"])?;
    let force = match params.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ValidationError::new(
                "force",
                format!("must be true or false, got {other:?}"),
            )
            .into())
        }
    };
    let key = app.key(kind, &id);
    let referrers = resource::referrers(kind);
    for attempt in 0..ATTEMPTS {
        let guard = if force || referrers.is_empty() {
            None
        } else {
            if app.store.get(&key).await?.is_none() {
                return Err(not_found(kind, &id));
            }
            let (revision, entries) = app.store.scan(referrers).await?;
            let users = users_of(&app, &entries, kind, &id);
            if !users.is_empty() {
                return Err(ApiError::BadRequest(format!(
                    "can not delete {} {id}: still used by {}; delete or change those first, \
                     or add ?force=true",
                    kind.singular(),
                    name_list(&users)
                )));
            }
            Some((revision, referrers))
        };
        // The delete fails if any possible user changed after the scan's revision.
        // A consumer's credentials go with it.
        let children = (kind == Kind::Consumers)
            .then(|| model::credential::credentials_prefix(app.store.prefix(), &id));
        match app
            .store
            .delete_if(&key, guard, children.as_deref())
            .await?
        {
            DeleteOutcome::Deleted { revision } => {
                return Ok(crate::cluster::Written::at(
                    revision,
                    Json(json!({ "deleted": "1", "key": key })),
                ))
            }
            DeleteOutcome::NotFound => return Err(not_found(kind, &id)),
            DeleteOutcome::Changed => backoff(attempt).await,
        }
    }
    Err(conflict(kind, &id))
}

pub async fn fallback(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no such endpoint: {method} {}; see GET /apisix/admin/openapi.json",
        uri.path()
    ))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    // `/apisix/admin/{kind}/{id}/{*path}` matches any deep path: an unknown kind is a 404.
    let kind = uri
        .path()
        .strip_prefix("/apisix/admin/")
        .and_then(|rest| rest.split('/').next());
    if let Some(kind) = kind.filter(|_| uri.path() != crate::openapi::OPENAPI_PATH) {
        if let Err(e) = kind_of(kind) {
            return e;
        }
    }
    ApiError::MethodNotAllowed(format!(
        "{method} is not allowed on {}; see GET /apisix/admin/openapi.json",
        uri.path()
    ))
}

/// Refuses a consumer whose credential (`key-auth` key, `basic-auth` username, `jwt-auth`
/// key, `hmac-auth` key_id) another consumer has already: it would no longer say who is
/// calling. (Two writes racing can still both pass; the gateway then gives it to the
/// smaller username and logs the clash.)
pub(crate) async fn unique_credentials(app: &App, own_key: &str, doc: &Value) -> Result<()> {
    let fields = model::consumer::IDENTITY_FIELDS;
    let value_of = |v: &Value, (plugin, field, secret): (&str, &str, bool)| {
        let raw = v.get("plugins")?.get(plugin)?.get(field)?.as_str()?;
        Some(match secret {
            true => app.keyring.open_secret(raw),
            false => raw.to_string(),
        })
    };
    let mine: Vec<_> = fields
        .iter()
        .filter_map(|f| Some((*f, value_of(doc, *f)?)))
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    // Consumers and their credentials share one range.
    let prefix = model::key::kind_prefix(app.store.prefix(), Kind::Consumers);
    for entry in app.store.range(&prefix).await? {
        if entry.key == own_key {
            continue;
        }
        let other = stored_json(&entry.value);
        let owner = entry.key[prefix.len()..]
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        for ((plugin, field, secret), value) in &mine {
            if value_of(&other, (plugin, field, *secret)).is_some_and(|v| v == *value) {
                return Err(ValidationError::new(
                    format!("plugins.{plugin}.{field}"),
                    format!("duplicate {field} of plugin {plugin} found with consumer: {owner}"),
                )
                .into());
            }
        }
    }
    Ok(())
}

fn put_only(kind: Kind) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} are written with PUT /apisix/admin/{0}/{{username}} only, as in APISIX",
        kind.as_str()
    ))
}

fn kind_of(raw: &str) -> Result<Kind> {
    match Kind::parse(raw) {
        Some(kind) if resource::supported(kind) => Ok(kind),
        Some(kind) => Err(ApiError::BadRequest(format!(
            "{} are not supported yet; this Admin API serves {}",
            kind.as_str(),
            supported_list()
        ))),
        None => Err(ApiError::NotFound(format!(
            "unknown resource kind {raw:?}; this Admin API serves {}",
            supported_list()
        ))),
    }
}

fn supported_list() -> String {
    resource::SUPPORTED
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_and_id((kind, id): (String, String)) -> Result<(Kind, Id)> {
    let kind = kind_of(&kind)?;
    let id = Id::parse(&id).map_err(|e| ValidationError::new("id", e))?;
    Ok((kind, id))
}

/// The query parameters, refusing unknown ones rather than ignoring them.
pub(crate) fn query(uri: &Uri, allowed: &[&str]) -> Result<BTreeMap<String, String>> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)?;
    let mut params = BTreeMap::new();
    for (name, value) in pairs {
        if name == crate::auth::QUERY {
            continue;
        }
        if !allowed.contains(&name.as_str()) {
            let accepted = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {name:?}; this endpoint accepts: {accepted}"
            )));
        }
        if params.insert(name.clone(), value).is_some() {
            return Err(ApiError::BadRequest(format!(
                "query parameter {name:?} is given more than once"
            )));
        }
    }
    Ok(params)
}

pub(crate) fn json_body(bytes: &[u8]) -> Result<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "the request body is empty; send a JSON document".into(),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON in the request body: {e}")))
}

pub(crate) fn object_body(bytes: &[u8]) -> Result<Map<String, Value>> {
    match json_body(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(ValidationError::new("", "the body must be a JSON object").into()),
    }
}

/// A stored value as JSON; something else than JSON (written by another tool) as a string.
pub(crate) fn stored_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// One resource as APISIX answers it, without secrets.
fn item(kind: Kind, entry: &Entry) -> Value {
    let mut value = stored_json(&entry.value);
    resource::redact(kind, &mut value);
    json!({
        "key": entry.key,
        "value": value,
        "createdIndex": entry.create_revision,
        "modifiedIndex": entry.mod_revision,
    })
}

/// The answer to a write, without secrets.
fn written(kind: Kind, key: &str, mut value: Value) -> Json<Value> {
    resource::redact(kind, &mut value);
    Json(json!({ "key": key, "value": value }))
}

/// Stamps, validates and seals secrets: the value to store and the resources it references.
fn prepare(
    app: &App,
    kind: Kind,
    id: &Id,
    mut doc: Map<String, Value>,
    previous: Option<&Value>,
    now: u64,
    reset_update_time: bool,
) -> Result<(Value, Vec<resource::Reference>)> {
    resource::stamp(&mut doc, id, previous, now, reset_update_time);
    let mut value = Value::Object(doc);
    let refs = resource::validate(kind, &value)?;
    resource::seal(kind, &mut value, &app.keyring)?;
    Ok((value, refs))
}

/// A conditional write: `Ok(Some(revision))` when written, `Ok(None)` when the key
/// changed since it was read (the caller reads again), a 400 when a reference does not
/// exist.
async fn write(
    app: &App,
    key: &str,
    value: &Value,
    expect: Expect,
    refs: &[resource::Reference],
    lease: Option<i64>,
) -> Result<Option<i64>> {
    // One check per key: a traffic-split may name the route's own upstream again.
    let mut ref_keys: Vec<String> = Vec::new();
    for (k, id, _) in refs {
        let key = app.key(*k, id);
        if !ref_keys.contains(&key) {
            ref_keys.push(key);
        }
    }
    let bytes = value.to_string().into_bytes();
    match app
        .store
        .put_if(key, bytes, expect, &ref_keys, lease)
        .await?
    {
        WriteOutcome::Written { revision } => Ok(Some(revision)),
        WriteOutcome::Changed => Ok(None),
        WriteOutcome::MissingReference(missing) => {
            let (kind, id, field) = refs
                .iter()
                .find(|(k, id, _)| app.key(*k, id) == missing)
                .ok_or_else(|| ApiError::BadRequest(format!("{missing} does not exist")))?;
            Err(ApiError::BadRequest(format!(
                "{} {id} referenced by {field} does not exist",
                kind.singular(),
            )))
        }
    }
}

/// `route 3`, … for every stored resource that references `kind`/`id`.
fn users_of(app: &App, entries: &[Entry], kind: Kind, id: &Id) -> Vec<String> {
    entries
        .iter()
        .filter(|e| {
            let user = parse_key(app.store.prefix(), &e.key).map(|(k, _)| k);
            resource::references_to(user, &stored_json(&e.value), kind, id)
        })
        .map(|e| match parse_key(app.store.prefix(), &e.key) {
            Some((user_kind, user_id)) => format!("{} {user_id}", user_kind.singular()),
            None => e.key.clone(),
        })
        .collect()
}

fn name_list(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(MAX_USERS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_USERS_SHOWN {
        text.push_str(&format!(" and {} more", names.len() - MAX_USERS_SHOWN));
    }
    text
}

fn not_found(kind: Kind, id: &Id) -> ApiError {
    ApiError::NotFound(format!("{} {id} not found", kind.singular()))
}

fn conflict(kind: Kind, id: &Id) -> ApiError {
    ApiError::Conflict(format!(
        "{} {id} kept changing concurrently ({ATTEMPTS} attempts); try again",
        kind.singular()
    ))
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A short random pause, growing with the attempt, so contending writers spread out.
pub(crate) async fn backoff(attempt: u32) {
    let max = 5 + 10 * u64::from(attempt);
    let ms = rand::rng().random_range(1..=max);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
