//! The `cors` plugin: a preflight (`OPTIONS`) is answered 200 in the rewrite phase, and
//! every response to an allowed origin gets the CORS headers (header filter).
use super::{Answer, Phases, Req, Run};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use model::plugin_metadata::Metadata;
use model::plugins::cors::Origins;

pub struct Cors {
    conf: model::plugins::cors::Cors,
    /// The origins of the lists `allow_origins_by_metadata` names, from the plugin's
    /// metadata when the chain was compiled; `None` when it names none.
    by_metadata: Option<Vec<String>>,
    /// The configured values, made once: a clone shares their bytes.
    methods: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
}

impl Cors {
    pub fn new(conf: model::plugins::cors::Cors, metadata: Option<&Metadata>) -> Cors {
        let by_metadata = (!conf.allow_origins_by_metadata.is_empty()).then(|| {
            let lists = match metadata {
                Some(Metadata::Cors(lists)) => Some(lists),
                _ => None,
            };
            conf.allow_origins_by_metadata
                .iter()
                .filter_map(|name| lists?.get(name))
                .flatten()
                .cloned()
                .collect()
        });
        let value = |s: &str| HeaderValue::from_str(s).ok();
        Cors {
            methods: value(&conf.allow_methods),
            max_age: value(&conf.max_age.to_string()),
            expose: conf.expose_headers.as_deref().and_then(value),
            allow_headers: conf.allow_headers.as_deref().and_then(value),
            conf,
            by_metadata,
        }
    }

    /// APISIX's order: the metadata's lists first; when they do not hold the origin, the
    /// route's own `allow_origins` (or regexes) only if it set one other than `*`.
    fn allowed_origin<'a>(&'a self, origin: Option<&'a str>) -> Option<&'a str> {
        let Some(listed) = &self.by_metadata else {
            return self.conf.allowed_origin(origin);
        };
        if let Some(o) = origin.filter(|o| listed.iter().any(|l| l == o)) {
            return Some(o);
        }
        match &self.conf.allow_origins {
            Origins::Literal(star) if star == "*" => None,
            _ => self.conf.allowed_origin(origin),
        }
    }
}

impl Phases for Cors {
    fn rewrite(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        run.origin = req.parts.headers.get(ORIGIN).cloned();
        run.cors_request_headers = req
            .parts
            .headers
            .get(ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned();
        (req.parts.method == Method::OPTIONS).then(|| Answer::empty(StatusCode::OK))
    }

    fn header_filter(&self, run: &Run, _status: StatusCode, headers: &mut HeaderMap) {
        let c = &self.conf;
        if c.vary || self.by_metadata.is_some() {
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
        let origin = run.origin.as_ref().and_then(|o| o.to_str().ok());
        let Some(allowed) = self.allowed_origin(origin) else {
            return;
        };
        let value = |s: &str| HeaderValue::from_str(s).ok();
        let mut set = |name, v: Option<HeaderValue>| {
            if let Some(v) = v {
                headers.insert(name, v);
            }
        };
        let origin = match allowed {
            "*" => Some(HeaderValue::from_static("*")),
            echoed => value(echoed),
        };
        set(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        set(ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        set(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if c.expose_headers.is_some() {
            set(ACCESS_CONTROL_EXPOSE_HEADERS, self.expose.clone());
        }
        let allow_headers = match &c.allow_headers {
            Some(_) => self.allow_headers.clone(),
            None => run.cors_request_headers.clone(),
        };
        set(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        if c.allow_credential {
            set(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                Some(HeaderValue::from_static("true")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn origins_by_metadata() {
        let lists: BTreeMap<String, Vec<String>> = [
            (
                "EXAMPLE".to_string(),
                vec!["https://example.com".to_string()],
            ),
            ("OTHER".to_string(), vec!["https://other.com".to_string()]),
        ]
        .into();
        let metadata = Metadata::Cors(lists);
        let cors = |conf: serde_json::Value, m: Option<&Metadata>| {
            Cors::new(model::plugins::cors::Cors::parse(&conf).unwrap(), m)
        };
        let by_meta = cors(
            json!({"allow_origins_by_metadata": ["EXAMPLE"]}),
            Some(&metadata),
        );
        let with_own = cors(
            json!({"allow_origins_by_metadata": ["EXAMPLE"], "allow_origins": "https://own.com"}),
            Some(&metadata),
        );
        let no_meta = cors(json!({"allow_origins_by_metadata": ["EXAMPLE"]}), None);
        let plain = cors(json!({}), Some(&metadata));
        for (origin, want) in [
            (
                "https://example.com",
                [
                    Some("https://example.com"),
                    Some("https://example.com"),
                    None,
                    Some("*"),
                ],
            ),
            // A single own origin is sent as it is (the browser compares it).
            (
                "https://other.com",
                [None, Some("https://own.com"), None, Some("*")],
            ),
            (
                "https://own.com",
                [None, Some("https://own.com"), None, Some("*")],
            ),
        ] {
            let got =
                [&by_meta, &with_own, &no_meta, &plain].map(|c| c.allowed_origin(Some(origin)));
            assert_eq!(got, want, "{origin}");
        }
    }
}
