//! The gateway replicas as they report themselves (`model::cluster`): `GET
//! /apisix/admin/cluster` (our extension), and writes that answer only once the replicas
//! serve them (`?wait=applied[&timeout=5s][&min=N]` on any PUT, POST, PATCH or DELETE).
use crate::error::ApiError;
use crate::App;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use model::cluster::{applied, gateways_prefix, Applied, Report};
use model::key::root_prefix;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Waits longer than this are refused: a client wanting more can ask again.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// How often the reports are read while a write waits.
const POLL: Duration = Duration::from_millis(50);
/// The least time a read of the reports is given.
const READ_AT_LEAST: Duration = Duration::from_millis(500);

/// The etcd revision a handler's write landed at, carried to the wait in the response.
#[derive(Debug, Clone, Copy)]
pub struct Written(pub i64);

impl Written {
    pub fn at(revision: i64, resp: impl IntoResponse) -> Response {
        let mut resp = resp.into_response();
        resp.extensions_mut().insert(Written(revision));
        resp
    }
}

/// What a write asked to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub timeout: Duration,
    pub min: Option<usize>,
}

const WAIT_PARAMS: [&str; 3] = ["wait", "timeout", "min"];

/// Takes `wait`, `timeout` and `min` out of a query string (the handlers refuse unknown
/// parameters), returning what is left and the wait asked for. Errors name the parameter.
pub fn take_wait(query: &str) -> Result<(String, Option<Wait>)> {
    let mut rest = Vec::new();
    let (mut wait, mut timeout, mut min) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "wait" => &mut wait,
            "timeout" => &mut timeout,
            "min" => &mut min,
            _ => {
                rest.push(pair);
                continue;
            }
        };
        if slot.replace(value.to_string()).is_some() {
            return Err(ApiError::BadRequest(format!(
                "query parameter {name:?} is given more than once"
            )));
        }
    }
    let rest = rest.join("&");
    match wait.as_deref() {
        None if timeout.is_some() || min.is_some() => Err(ApiError::BadRequest(
            "timeout and min only go with wait=applied".into(),
        )),
        None => Ok((rest, None)),
        Some("applied") => {
            let timeout = match timeout {
                None => DEFAULT_WAIT,
                Some(t) => model::duration::parse_duration(&t)
                    .ok()
                    .filter(|d| !d.is_zero() && *d <= MAX_WAIT)
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "timeout: {t:?} is not a duration from 1ms to 60s (like 5s or 500ms)"
                        ))
                    })?,
            };
            let min = match min {
                None => None,
                Some(m) => Some(
                    m.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=10_000).contains(n))
                        .ok_or_else(|| {
                            ApiError::BadRequest(format!(
                                "min: {m:?} is not a number of replicas from 1 to 10000"
                            ))
                        })?,
                ),
            };
            Ok((rest, Some(Wait { timeout, min })))
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "wait: {other:?} is not supported; the one value is \"applied\""
        ))),
    }
}

/// Middleware: a write with `?wait=applied` is answered once the replicas serve it, or
/// with 504 naming those that did not within the timeout (the write stays done).
pub async fn wait_layer(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let write = matches!(
        *req.method(),
        Method::PUT | Method::POST | Method::PATCH | Method::DELETE
    );
    let Some(query) = req.uri().query().filter(|_| write) else {
        return next.run(req).await;
    };
    if !WAIT_PARAMS.iter().any(|p| query.contains(p)) {
        return next.run(req).await;
    }
    let (rest, wait) = match take_wait(query) {
        Ok(taken) => taken,
        Err(e) => return e.into_response(),
    };
    let path = req.uri().path();
    let uri = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{rest}")
    };
    match uri.parse::<Uri>() {
        Ok(u) => *req.uri_mut() = u,
        Err(_) => return ApiError::BadRequest("invalid request target".into()).into_response(),
    }
    let resp = next.run(req).await;
    let (Some(wait), Some(Written(revision))) = (wait, resp.extensions().get::<Written>().copied())
    else {
        return resp;
    };
    if !resp.status().is_success() {
        return resp;
    }
    match wait_applied(&app, revision, &wait).await {
        Ok(()) => resp,
        Err(e) => e,
    }
}

/// Reads the reports every 50 ms until the revision is applied or the time is up.
async fn wait_applied(app: &App, revision: i64, wait: &Wait) -> std::result::Result<(), Response> {
    let deadline = Instant::now() + wait.timeout;
    // The last reports read: etcd failing during the wait makes it time out on what was
    // last known, never fails the write.
    let mut last: Option<Vec<Report>> = None;
    loop {
        // Each read gets what is left, and at least a moment for the last one.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(READ_AT_LEAST);
        if let Ok(Ok(r)) = tokio::time::timeout(left, reports(app)).await {
            last = Some(r);
        }
        let Some(reports) = last.as_ref() else {
            if Instant::now() >= deadline {
                let body = json!({
                    "error_msg": format!(
                        "written at revision {revision}, but the replicas' reports could not \
                         be read within {:?}", wait.timeout),
                    "revision": revision,
                    "pending": [],
                });
                return Err((StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response());
            }
            tokio::time::sleep(POLL).await;
            continue;
        };
        let state = applied(reports, revision, wait.min);
        let Applied::Waiting {
            pending,
            have,
            need,
        } = state
        else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            let behind: Vec<Value> = reports
                .iter()
                .filter(|r| pending.contains(&r.id))
                .map(|r| json!({"id": r.id, "applied_revision": r.applied_revision}))
                .collect();
            let names = if pending.is_empty() {
                "no replica is reporting".to_string()
            } else {
                format!("not yet applied by {}", pending.join(", "))
            };
            let body = json!({
                "error_msg": format!(
                    "written at revision {revision}, but {have} of the {need} replicas waited \
                     for serve it after {:?}: {names}",
                    wait.timeout
                ),
                "revision": revision,
                "pending": behind,
            });
            return Err((StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response());
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) async fn reports(app: &App) -> Result<Vec<Report>> {
    let entries = app
        .store
        .range(&gateways_prefix(app.store.prefix()))
        .await?;
    // A report that does not parse (another version's) is left out rather than failing.
    Ok(entries
        .iter()
        .filter_map(|e| serde_json::from_slice::<Report>(&e.value).ok())
        .collect())
}

/// `GET /apisix/admin/cluster`: every live replica, what it serves and how far behind.
pub async fn get(State(app): State<Arc<App>>, uri: Uri) -> Result<Json<Value>> {
    crate::handlers::query(&uri, &[])?;
    let (revision, latest) = app
        .store
        .latest_write(&root_prefix(app.store.prefix()))
        .await?;
    let mut reports = reports(&app).await?;
    // A delete leaves no key behind: what the most advanced replica applied counts too.
    let latest = reports
        .iter()
        .map(|r| r.applied_revision)
        .fold(latest, i64::max);
    reports.sort_by(|a, b| a.id.cmp(&b.id));
    let gateways: Vec<Value> = reports
        .into_iter()
        .map(|r| {
            let lag = (latest - r.applied_revision).max(0);
            let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("in_sync".into(), json!(lag == 0));
                m.insert("lag".into(), json!(lag));
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "revision": revision,
        "config_revision": latest,
        "total": gateways.len(),
        "gateways": gateways,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_parameters_table() {
        let five = Duration::from_secs(5);
        let ok: &[(&str, &str, Option<Wait>)] = &[
            ("", "", None),
            ("ttl=5", "ttl=5", None),
            (
                "wait=applied",
                "",
                Some(Wait {
                    timeout: five,
                    min: None,
                }),
            ),
            (
                "ttl=5&wait=applied&timeout=250ms&min=2&api_key=k",
                "ttl=5&api_key=k",
                Some(Wait {
                    timeout: Duration::from_millis(250),
                    min: Some(2),
                }),
            ),
            ("timeout_x=1", "timeout_x=1", None),
        ];
        for (query, rest, wait) in ok {
            let (r, w) = take_wait(query).unwrap();
            assert_eq!((&r.as_str(), &w), (rest, wait), "{query}");
        }
        let bad: &[(&str, &str)] = &[
            ("wait=yes", "wait"),
            ("timeout=5s", "wait=applied"),
            ("min=1", "wait=applied"),
            ("wait=applied&timeout=0", "timeout"),
            ("wait=applied&timeout=61s", "timeout"),
            ("wait=applied&timeout=soon", "timeout"),
            ("wait=applied&timeout=99999999999999999999999", "timeout"),
            ("wait=applied&min=0", "min"),
            ("wait=applied&min=-1", "min"),
            ("wait=applied&wait=applied", "\"wait\""),
        ];
        for (query, named) in bad {
            let e = take_wait(query).unwrap_err();
            assert!(e.to_string().contains(named), "{query}: {e}");
        }
    }
}
