//! `/apisix/admin/consumers/{username}/credentials[/{id}]` (APISIX 3.x): a consumer's
//! authentication plugins kept apart from it, so that one consumer holds several keys and
//! each is rotated alone. Written only while the consumer exists (checked in the write's
//! transaction); deleted with it.
use crate::error::ApiError;
use crate::handlers::{backoff, now, object_body, query, stored_json, unique_credentials};
use crate::store::{DeleteOutcome, Entry, Expect, WriteOutcome};
use crate::{resource, App};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::Json;
use model::credential::{credential_key, credentials_prefix};
use model::{Credential, Id, Kind, ValidationError};
use serde_json::{json, Value};
use std::sync::Arc;

type Result<T, E = ApiError> = std::result::Result<T, E>;

const ATTEMPTS: u32 = 10;

/// The consumer and credential a request names; no query parameter is taken.
fn target((user, id): (String, String), uri: &Uri) -> Result<(Id, Id)> {
    query(uri, &[])?;
    let user = Id::parse(&user).map_err(|e| ValidationError::new("username", e))?;
    let id = Id::parse(&id).map_err(|e| ValidationError::new("id", e))?;
    Ok((user, id))
}

fn item(entry: &Entry) -> Value {
    let mut value = stored_json(&entry.value);
    resource::redact_secrets(&mut value);
    json!({
        "key": entry.key,
        "value": value,
        "createdIndex": entry.create_revision,
        "modifiedIndex": entry.mod_revision,
    })
}

fn credential_missing(user: &Id, id: &Id) -> ApiError {
    ApiError::NotFound(format!("credential {id} of consumer {user} not found"))
}

fn consumer_missing(user: &Id) -> ApiError {
    ApiError::NotFound(format!("consumer {user} not found"))
}

pub async fn list(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Json<Value>> {
    let user = Id::parse(&path?.0).map_err(|e| ValidationError::new("username", e))?;
    query(&uri, &[])?;
    if app
        .store
        .get(&app.key(Kind::Consumers, &user))
        .await?
        .is_none()
    {
        return Err(consumer_missing(&user));
    }
    let entries = app
        .store
        .range(&credentials_prefix(app.store.prefix(), &user))
        .await?;
    let list: Vec<Value> = entries.iter().map(item).collect();
    Ok(Json(json!({ "list": list, "total": list.len() })))
}

pub async fn get_one(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
) -> Result<Json<Value>> {
    let (user, id) = target(path?.0, &uri)?;
    let key = credential_key(app.store.prefix(), &user, &id);
    match app.store.get(&key).await? {
        Some(entry) => Ok(Json(item(&entry))),
        None => Err(credential_missing(&user, &id)),
    }
}

/// `PUT …/credentials/{id}`: create (201) or replace (200).
pub async fn put(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let (user, id) = target(path?.0, &uri)?;
    let doc = object_body(&body?)?;
    resource::check_body_id(&doc, &id)?;
    let key = credential_key(app.store.prefix(), &user, &id);
    // Validate before touching etcd: an invalid body is a 400 even while etcd is down.
    let stamped = |previous: Option<&Value>| {
        let mut d = doc.clone();
        resource::stamp(&mut d, &id, previous, now(), false);
        Value::Object(d)
    };
    Credential::decode_value(&stamped(None))?;
    unique_credentials(&app, &key, &Value::Object(doc.clone())).await?;
    let consumer_key = app.key(Kind::Consumers, &user);
    for attempt in 0..ATTEMPTS {
        let previous = app.store.get(&key).await?;
        let mut value = stamped(previous.as_ref().map(|p| stored_json(&p.value)).as_ref());
        resource::seal_secrets(&mut value, &app.keyring);
        let expect = previous
            .as_ref()
            .map_or(Expect::Absent, |e| Expect::ModRevision(e.mod_revision));
        let bytes = value.to_string().into_bytes();
        match app
            .store
            .put_if(
                &key,
                bytes,
                expect,
                std::slice::from_ref(&consumer_key),
                None,
            )
            .await?
        {
            WriteOutcome::Written { revision } => {
                let status = match expect {
                    Expect::Absent => StatusCode::CREATED,
                    Expect::ModRevision(_) => StatusCode::OK,
                };
                resource::redact_secrets(&mut value);
                let resp = (status, Json(json!({ "key": key, "value": value })));
                return Ok(crate::cluster::Written::at(revision, resp));
            }
            WriteOutcome::MissingReference(_) => return Err(consumer_missing(&user)),
            WriteOutcome::Changed => backoff(attempt).await,
        }
    }
    Err(ApiError::Conflict(format!(
        "credential {id} kept changing concurrently ({ATTEMPTS} attempts); try again"
    )))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
) -> Result<Response> {
    let (user, id) = target(path?.0, &uri)?;
    let key = credential_key(app.store.prefix(), &user, &id);
    match app.store.delete_if(&key, None, None).await? {
        DeleteOutcome::Deleted { revision } => Ok(crate::cluster::Written::at(
            revision,
            Json(json!({ "deleted": "1", "key": key })),
        )),
        DeleteOutcome::NotFound | DeleteOutcome::Changed => Err(credential_missing(&user, &id)),
    }
}
