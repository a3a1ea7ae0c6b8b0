//! The OpenAPI 3.0 document of the Admin API, written by hand so that it says exactly what
//! the handlers do. Served without authentication so that tools can discover the API.
use crate::resource::{no_post, put_only, SUPPORTED};
use axum::Json;
use model::Kind;
use serde_json::{json, Map, Value};

pub const OPENAPI_PATH: &str = "/apisix/admin/openapi.json";

pub async fn serve() -> Json<Value> {
    Json(document())
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for kind in SUPPORTED {
        let (mut collection, mut one, sub) = kind_paths(kind);
        if put_only(kind) {
            // Written with PUT only, as APISIX: no POST, no PATCH (405).
            collection.as_object_mut().map(|c| c.remove("post"));
            one.as_object_mut().map(|o| o.remove("patch"));
        } else {
            if no_post(kind) {
                collection.as_object_mut().map(|c| c.remove("post"));
            }
            paths.insert(
                format!("/apisix/admin/{}/{{id}}/{{path}}", kind.as_str()),
                sub,
            );
        }
        paths.insert(format!("/apisix/admin/{}", kind.as_str()), collection);
        paths.insert(format!("/apisix/admin/{}/{{id}}", kind.as_str()), one);
    }
    extra_paths(&mut paths);
    waits(&mut paths);
    paths.insert(
        OPENAPI_PATH.into(),
        json!({"get": {
            "summary": "This document",
            "operationId": "getOpenApi",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI document",
                "content": {"application/json": {"schema": {"type": "object"}}}}}
        }}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Gateway Admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "APISIX-compatible Admin API. Resources are validated and stored in \
                etcd under `{prefix}/{kind}/{id}`; every gateway replica applies them. \
                Errors are `{\"error_msg\": \"...\"}`."
        },
        "servers": [{"url": "http://127.0.0.1:9180"}],
        "security": [{"ApiKeyHeader": []}, {"ApiKeyQuery": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
                "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"}
            },
            "parameters": {
                "id": {"name": "id", "in": "path", "required": true,
                    "description": "1 to 64 characters of letters, digits, '-', '_' and '.', not '.' or '..'",
                    "schema": {"type": "string", "pattern": "^(?!\\.{1,2}$)[a-zA-Z0-9_.-]{1,64}$"}},
                "path": {"name": "path", "in": "path", "required": true,
                    "description": "Slash-separated field path inside the resource, e.g. `upstream/nodes`",
                    "schema": {"type": "string"}},
                "page": {"name": "page", "in": "query", "required": false,
                    "description": "1-based page number; needs page_size",
                    "schema": {"type": "integer", "minimum": 1, "default": 1}},
                "page_size": {"name": "page_size", "in": "query", "required": false,
                    "description": "Resources per page; without it the whole list is returned",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                "ttl": {"name": "ttl", "in": "query", "required": false,
                    "description": "Seconds until etcd deletes the resource (a lease); a PATCH keeps it",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 31536000}},
                "name": {"name": "name", "in": "query", "required": false,
                    "description": "Only resources whose name matches this regular expression (unanchored)",
                    "schema": {"type": "string", "maxLength": 256}},
                "label": {"name": "label", "in": "query", "required": false,
                    "description": "Only resources that have this label key",
                    "schema": {"type": "string"}},
                "uri": {"name": "uri", "in": "query", "required": false,
                    "description": "Only resources whose uri or one of whose uris matches this regular expression",
                    "schema": {"type": "string", "maxLength": 256}},
                "username": {"name": "username", "in": "path", "required": true,
                    "schema": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,100}$"}},
                "plugin": {"name": "name", "in": "path", "required": true,
                    "description": "A plugin name, as GET /apisix/admin/plugins/list gives them",
                    "schema": {"type": "string"}},
                "force": {"name": "force", "in": "query", "required": false,
                    "description": "Delete even if other resources still reference this one",
                    "schema": {"type": "boolean", "default": false}},
                "wait": {"name": "wait", "in": "query", "required": false,
                    "description": "`applied`: answer only once every live gateway replica (or `min` of them) serves this write (see GET /apisix/admin/cluster); 504 if they do not within `timeout` (the write stays done)",
                    "schema": {"type": "string", "enum": ["applied"]}},
                "timeout": {"name": "timeout", "in": "query", "required": false,
                    "description": "With wait=applied: how long to wait, e.g. 500ms, 5s (default 5s, at most 60s)",
                    "schema": {"type": "string"}},
                "min": {"name": "min", "in": "query", "required": false,
                    "description": "With wait=applied: this many replicas are enough",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 10000}}
            },
            "responses": {
                "BadRequest": error_response("Invalid body, field, reference or parameter"),
                "Unauthorized": error_response("Missing or wrong admin key"),
                "Forbidden": error_response("The viewer key may only read"),
                "NotFound": error_response("No such resource"),
                "Conflict": error_response("The resource kept changing concurrently; retry"),
                "TooLarge": error_response("The body is larger than 1.5 MiB"),
                "Unavailable": error_response("etcd is unavailable"),
                "NotApplied": {"description": "Written, but not served by the replicas waited for within the timeout",
                    "content": {"application/json": {"schema": {"type": "object",
                        "required": ["error_msg", "revision", "pending"],
                        "properties": {"error_msg": {"type": "string"}, "revision": {"type": "integer"},
                            "pending": {"type": "array", "items": {"type": "object", "properties": {
                                "id": {"type": "string"}, "applied_revision": {"type": "integer"}}}}}}}}}
            },
            "schemas": schemas()
        }
    })
}

fn error_response(description: &str) -> Value {
    json!({"description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn json_content(schema: &str) -> Value {
    json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}})
}

fn errors(codes: &[(&str, &str)]) -> Map<String, Value> {
    let mut map = Map::new();
    for (code, name) in [("401", "Unauthorized"), ("503", "Unavailable")]
        .iter()
        .chain(codes)
    {
        map.insert(
            code.to_string(),
            json!({"$ref": format!("#/components/responses/{name}")}),
        );
    }
    map
}

fn responses(ok: &[(&str, &str, &str)], errs: &[(&str, &str)]) -> Value {
    let mut map = errors(errs);
    for (code, description, schema) in ok {
        map.insert(
            code.to_string(),
            json!({"description": description, "content": json_content(schema)}),
        );
    }
    Value::Object(map)
}

fn kind_paths(kind: Kind) -> (Value, Value, Value) {
    let name = kind.singular();
    let plural = kind.as_str();
    let schema = schema_name(kind);
    let body = |required: bool| {
        json!({"required": required, "content": json_content(schema),
            "description": format!("The {name} as JSON")})
    };
    let bad = [
        ("400", "BadRequest"),
        ("403", "Forbidden"),
        ("413", "TooLarge"),
    ];
    let collection = json!({
        "get": {
            "summary": format!("List {plural}"),
            "operationId": format!("list_{plural}"),
            "parameters": [{"$ref": "#/components/parameters/page"},
                           {"$ref": "#/components/parameters/page_size"},
                           {"$ref": "#/components/parameters/name"},
                           {"$ref": "#/components/parameters/label"},
                           {"$ref": "#/components/parameters/uri"}],
            "responses": responses(&[("200", "The list, in key order", "List")], &[("400", "BadRequest")])
        },
        "post": {
            "summary": format!("Create a {name} with a server-assigned id"),
            "operationId": format!("create_{name}"),
            "parameters": [{"$ref": "#/components/parameters/ttl"}],
            "requestBody": body(true),
            "responses": responses(&[("201", "Created", "Written")], &bad)
        },
        "put": {
            "summary": format!("Create or replace the {name} whose id is in the body"),
            "operationId": format!("put_{name}_with_body_id"),
            "parameters": [{"$ref": "#/components/parameters/ttl"}],
            "requestBody": body(true),
            "responses": responses(&[("201", "Created", "Written"), ("200", "Replaced", "Written")], &bad)
        }
    });
    let one = json!({
        "parameters": [{"$ref": "#/components/parameters/id"}],
        "get": {
            "summary": format!("Get one {name}"),
            "operationId": format!("get_{name}"),
            "responses": responses(&[("200", "The resource", "Item")], &[("400", "BadRequest"), ("404", "NotFound")])
        },
        "put": {
            "summary": format!("Create or replace a {name}"),
            "operationId": format!("put_{name}"),
            "parameters": [{"$ref": "#/components/parameters/ttl"}],
            "requestBody": body(true),
            "responses": responses(&[("201", "Created", "Written"), ("200", "Replaced", "Written")], &bad)
        },
        "patch": {
            "summary": format!("Change a {name} with an RFC 7386 JSON merge patch (null removes a field)"),
            "operationId": format!("patch_{name}"),
            "requestBody": {"required": true, "content": {"application/merge-patch+json": {"schema": {"type": "object"}},
                                                          "application/json": {"schema": {"type": "object"}}}},
            "responses": responses(&[("200", "Patched", "Written")],
                &[("400", "BadRequest"), ("403", "Forbidden"), ("404", "NotFound"), ("409", "Conflict"), ("413", "TooLarge")])
        },
        "delete": {
            "summary": format!("Delete a {name}"),
            "operationId": format!("delete_{name}"),
            "parameters": [{"$ref": "#/components/parameters/force"}],
            "responses": responses(&[("200", "Deleted", "Deleted")],
                &[("400", "BadRequest"), ("403", "Forbidden"), ("404", "NotFound"), ("409", "Conflict")])
        }
    });
    let sub = json!({
        "parameters": [{"$ref": "#/components/parameters/id"}, {"$ref": "#/components/parameters/path"}],
        "patch": {
            "summary": format!("Replace one field of a {name} (APISIX sub-path patch); null removes it"),
            "operationId": format!("patch_{name}_path"),
            "requestBody": {"required": true, "content": {"application/json": {"schema": {}}}},
            "responses": responses(&[("200", "Patched", "Written")],
                &[("400", "BadRequest"), ("403", "Forbidden"), ("404", "NotFound"), ("409", "Conflict"), ("413", "TooLarge")])
        }
    });
    (collection, one, sub)
}

/// Every write takes `wait`, `timeout` and `min`, and may answer 504.
fn waits(paths: &mut Map<String, Value>) {
    for item in paths.values_mut() {
        for method in ["put", "post", "patch", "delete"] {
            let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) else {
                continue;
            };
            let params = op.entry("parameters").or_insert_with(|| json!([]));
            if let Some(list) = params.as_array_mut() {
                for p in ["wait", "timeout", "min"] {
                    list.push(json!({"$ref": format!("#/components/parameters/{p}")}));
                }
            }
            if let Some(r) = op.get_mut("responses").and_then(Value::as_object_mut) {
                r.insert(
                    "504".into(),
                    json!({"$ref": "#/components/responses/NotApplied"}),
                );
            }
        }
    }
}

/// Paths outside the kinds: credentials, what the registry says of plugins, the cluster.
fn extra_paths(paths: &mut Map<String, Value>) {
    paths.insert(
        "/apisix/admin/cluster".into(),
        json!({"get": {"summary": "Every live gateway replica: what it serves and how far behind it is (our extension)",
            "operationId": "get_cluster",
            "responses": {"200": {"description": "The replicas, as they report themselves on etcd leases",
                "content": {"application/json": {"schema": {"type": "object",
                    "required": ["revision", "config_revision", "total", "gateways"],
                    "properties": {
                        "revision": {"type": "integer", "description": "etcd's current revision"},
                        "config_revision": {"type": "integer", "description": "the latest revision a configuration key was written at"},
                        "total": {"type": "integer"},
                        "gateways": {"type": "array", "items": {"type": "object", "properties": {
                            "id": {"type": "string"}, "hostname": {"type": "string"}, "version": {"type": "string"},
                            "listen": {"type": "array", "items": {"type": "string"}}, "zone": {"type": "string"},
                            "started": {"type": "integer"}, "workers": {"type": "integer"},
                            "applied_revision": {"type": "integer"}, "watch_connected": {"type": "boolean"},
                            "invalid_resources": {"type": "integer"},
                            "lag": {"type": "integer", "description": "config_revision minus applied_revision, at least 0"},
                            "in_sync": {"type": "boolean"}}}}}}}}},
                "400": {"$ref": "#/components/responses/BadRequest"},
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "503": {"$ref": "#/components/responses/Unavailable"}}}}),
    );
    let user = json!({"$ref": "#/components/parameters/username"});
    let id = json!({"$ref": "#/components/parameters/id"});
    let cred_body = json!({"required": true, "content": json_content("Credential")});
    paths.insert(
        "/apisix/admin/consumers/{username}/credentials".into(),
        json!({"parameters": [user],
            "get": {"summary": "List a consumer's credentials (secrets left out)",
                "operationId": "list_credentials",
                "responses": responses(&[("200", "The list", "List")], &[("400", "BadRequest"), ("404", "NotFound")])}}),
    );
    paths.insert(
        "/apisix/admin/consumers/{username}/credentials/{id}".into(),
        json!({"parameters": [user, id],
            "get": {"summary": "Get one credential (secrets left out)", "operationId": "get_credential",
                "responses": responses(&[("200", "The credential", "Item")], &[("400", "BadRequest"), ("404", "NotFound")])},
            "put": {"summary": "Create or replace a credential of an existing consumer",
                "operationId": "put_credential", "requestBody": cred_body,
                "responses": responses(&[("201", "Created", "Written"), ("200", "Replaced", "Written")],
                    &[("400", "BadRequest"), ("403", "Forbidden"), ("404", "NotFound"), ("409", "Conflict"), ("413", "TooLarge")])},
            "delete": {"summary": "Delete a credential", "operationId": "delete_credential",
                "responses": responses(&[("200", "Deleted", "Deleted")], &[("400", "BadRequest"), ("403", "Forbidden"), ("404", "NotFound")])}}),
    );
    paths.insert(
        "/apisix/admin/plugins/list".into(),
        json!({"get": {"summary": "Every plugin's name, highest priority first",
            "operationId": "list_plugins",
            "parameters": [{"name": "subsystem", "in": "query", "required": false,
                "schema": {"type": "string", "enum": ["http", "stream"], "default": "http"}}],
            "responses": {"200": {"description": "Plugin names",
                "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string"}}}}},
                "400": {"$ref": "#/components/responses/BadRequest"},
                "401": {"$ref": "#/components/responses/Unauthorized"}}}}),
    );
    for (path, op) in [
        ("/apisix/admin/plugins/{name}", "get_plugin_schema"),
        (
            "/apisix/admin/schema/plugins/{name}",
            "get_plugin_schema_alias",
        ),
    ] {
        paths.insert(
            path.into(),
            json!({"parameters": [{"$ref": "#/components/parameters/plugin"}],
                "get": {"summary": "The JSON schema of a plugin's configuration", "operationId": op,
                "parameters": [{"name": "schema_type", "in": "query", "required": false,
                    "schema": {"type": "string", "enum": ["route", "consumer"], "default": "route"}},
                    {"name": "subsystem", "in": "query", "required": false,
                    "schema": {"type": "string", "enum": ["http"], "default": "http"}}],
                "responses": {"200": {"description": "A JSON schema",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
                    "400": {"$ref": "#/components/responses/BadRequest"},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": {"$ref": "#/components/responses/NotFound"}}}}),
        );
    }
}

fn schema_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Routes => "Route",
        Kind::Services => "Service",
        Kind::Ssls => "Ssl",
        Kind::Consumers => "Consumer",
        Kind::PluginConfigs => "PluginConfig",
        Kind::GlobalRules => "GlobalRule",
        Kind::ConsumerGroups => "ConsumerGroup",
        Kind::PluginMetadata => "PluginMetadata",
        Kind::Upstreams => "Upstream",
    }
}

fn schemas() -> Value {
    let id = json!({"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]});
    let meta = |mut props: Map<String, Value>| {
        props.insert("id".into(), id.clone());
        props.insert("name".into(), json!({"type": "string", "maxLength": 100}));
        props.insert("desc".into(), json!({"type": "string", "maxLength": 256}));
        props.insert(
            "labels".into(),
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
        );
        props.insert("create_time".into(), json!({"type": "integer"}));
        props.insert("update_time".into(), json!({"type": "integer"}));
        props
    };
    let timeout = json!({"type": "object", "required": ["connect", "send", "read"],
        "properties": {"connect": {"type": "number"}, "send": {"type": "number"}, "read": {"type": "number"}}});
    let strings = json!({"type": "array", "items": {"type": "string"}, "minItems": 1});
    let upstream = meta(obj(json!({
        "type": {"type": "string", "enum": ["roundrobin", "chash", "ewma", "least_conn"], "default": "roundrobin"},
        "nodes": {"oneOf": [
            {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
            {"type": "array", "items": {"type": "object", "required": ["host"], "properties": {
                "host": {"type": "string"}, "port": {"type": "integer"},
                "weight": {"type": "integer"}, "priority": {"type": "integer"},
                "zone": {"type": "string", "description": "Preferred by gateways started with the same --zone"}}}}]},
        "retries": {"type": "integer", "minimum": 0, "maximum": 100},
        "retry_timeout": {"type": "number", "minimum": 0},
        "timeout": timeout,
        "pass_host": {"type": "string", "enum": ["pass", "node", "rewrite"]},
        "upstream_host": {"type": "string"},
        "scheme": {"type": "string", "enum": ["http", "https", "grpc", "grpcs"], "default": "http",
            "description": "grpc: HTTP/2 in the clear; https/grpcs: over TLS, verified per tls"},
        "tls": {"type": "object", "additionalProperties": false, "properties": {
            "verify": {"type": "boolean", "default": true},
            "ca": {"type": "string", "description": "PEM CA certificates to verify the nodes with (else the system's roots)"}}},
        "hash_on": {"type": "string", "enum": ["vars", "header", "cookie", "consumer", "vars_combinations"], "default": "vars"},
        "key": {"type": "string", "description": "chash key: a variable (remote_addr, uri, arg_*…), header or cookie name, or a $var template"},
        "checks": {"type": "object", "required": ["active"], "description": "APISIX health checks: active (http/https/tcp probes) and passive (outcomes of real traffic)",
            "properties": {"active": {"type": "object"}, "passive": {"type": "object"}}},
        "keepalive_pool": {"type": "object", "properties": {"size": {"type": "integer"},
            "idle_timeout": {"type": "number"}, "requests": {"type": "integer"}}}
    })));
    // Split up: one json! this deep exceeds the macro recursion limit.
    let target_plugins: serde_json::Map<String, Value> =
        model::plugins::traffic_split::TARGET_PLUGINS
            .iter()
            .map(|name| (name.to_string(), json!({"type": "object"})))
            .collect();
    let weighted = json!({
        "type": "object", "additionalProperties": false, "properties": {
            "upstream_id": id,
            "upstream": {"$ref": "#/components/schemas/Upstream"},
            "weight": {"type": "integer", "minimum": 0, "maximum": 100000, "default": 1},
            "plugins": {"type": "object", "additionalProperties": false,
                "description": "our extension: plugins run only for the requests sent to this entry, after the route's",
                "properties": target_plugins}
        }
    });
    let rule = json!({"type": "object", "additionalProperties": false, "properties": {
        "match": {"type": "array", "items": {"type": "object", "required": ["vars"],
            "properties": {"vars": {"type": "array"}}}},
        "weighted_upstreams": {"type": "array", "minItems": 1, "maxItems": 20, "items": weighted}
    }});
    let redirect = json!({"type": "object", "additionalProperties": false,
        "description": "Exactly one of http_to_https, uri, regex_uri",
        "properties": {"http_to_https": {"type": "boolean"}, "uri": {"type": "string"},
            "regex_uri": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
            "ret_code": {"type": "integer", "minimum": 200, "maximum": 599},
            "append_query_string": {"type": "boolean"}, "_meta": {"$ref": "#/components/schemas/PluginMeta"}}});
    let split = json!({"type": "object", "additionalProperties": false,
        "properties": {"rules": {"type": "array", "items": rule},
            "_meta": {"$ref": "#/components/schemas/PluginMeta"}}});
    let plugins = |scope: model::plugins::Scope| {
        let mut props = Map::new();
        for spec in model::plugins::REGISTRY
            .iter()
            .filter(|s| s.allowed_in(scope))
        {
            let schema = match spec.name {
                "redirect" => redirect.clone(),
                "traffic-split" => split.clone(),
                name => json!({"type": "object",
                    "description": format!("APISIX's {name} plugin (docs/plugins.md); _meta: priority, disable, filter")}),
            };
            props.insert(spec.name.into(), schema);
        }
        json!({"type": "object", "additionalProperties": false, "properties": props,
            "description": "Plugins by name; any other name is rejected (docs/plugins.md)"})
    };
    let route_plugins = plugins(model::plugins::Scope::Route);
    let route = meta(obj(json!({
        "uri": {"type": "string"}, "uris": strings,
        "host": {"type": "string"}, "hosts": strings,
        "methods": {"type": "array", "items": {"type": "string", "enum": model::route::METHODS}},
        "remote_addr": {"type": "string"}, "remote_addrs": strings,
        "vars": {"type": "array"},
        "priority": {"type": "integer", "default": 0},
        "upstream": {"$ref": "#/components/schemas/Upstream"},
        "upstream_id": id, "service_id": id, "plugin_config_id": id,
        "plugins": route_plugins,
        "status": {"type": "integer", "enum": [0, 1], "default": 1},
        "timeout": timeout,
        "enable_websocket": {"type": "boolean", "default": false}
    })));
    let service = meta(obj(json!({
        "upstream": {"$ref": "#/components/schemas/Upstream"},
        "upstream_id": id,
        "hosts": strings,
        "plugins": plugins(model::plugins::Scope::Service),
        "enable_websocket": {"type": "boolean", "default": false}
    })));
    let plugin_config = meta(obj(json!({
        "plugins": plugins(model::plugins::Scope::PluginConfig)
    })));
    let consumer_group = meta(obj(json!({
        "plugins": plugins(model::plugins::Scope::PluginConfig)
    })));
    let global_rule = obj(json!({
        "id": id,
        "plugins": plugins(model::plugins::Scope::GlobalRule),
        "create_time": {"type": "integer"},
        "update_time": {"type": "integer"}
    }));
    let consumer = obj(json!({
        "id": id,
        "username": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,100}$",
            "description": "The consumer's id; filled in from the URL when absent"},
        "plugins": plugins(model::plugins::Scope::Consumer),
        "group_id": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
            "description": "A consumer group whose plugins this consumer's own are merged over"},
        "desc": {"type": "string", "maxLength": 256},
        "labels": {"type": "object", "additionalProperties": {"type": "string"},
            "description": "labels.custom_id is sent upstream as X-Consumer-Custom-ID"},
        "create_time": {"type": "integer"},
        "update_time": {"type": "integer"}
    }));
    let mut ssl = obj(json!({
        "id": id,
        "cert": {"type": "string", "description": "PEM certificate chain, leaf first"},
        "key": {"type": "string", "writeOnly": true,
            "description": "PEM private key of cert; encrypted at rest with --data-encryption-keys, never returned"},
        "certs": {"type": "array", "items": {"type": "string"},
            "description": "More PEM certificate chains for the same SNIs, each with keys[i]"},
        "keys": {"type": "array", "items": {"type": "string"}, "writeOnly": true,
            "description": "PEM private keys of certs; encrypted at rest, never returned"},
        "sni": {"type": "string", "description": "One server name; or use snis"},
        "snis": {"type": "array", "minItems": 1, "items": {"type": "string"},
            "description": "Server names (example.com, *.example.com), case-insensitive"},
        "status": {"type": "integer", "enum": [0, 1], "default": 1},
        "type": {"type": "string", "enum": ["server"], "default": "server"},
        "validity_start": {"type": "integer", "readOnly": true,
            "description": "The leaf certificate's notBefore, unix seconds (set by the server)"},
        "validity_end": {"type": "integer", "readOnly": true,
            "description": "The leaf certificate's notAfter, unix seconds (set by the server)"},
        "create_time": {"type": "integer"},
        "update_time": {"type": "integer"}
    }));
    ssl.insert(
        "labels".into(),
        json!({"type": "object", "additionalProperties": {"type": "string"}}),
    );
    // anyOf, not oneOf: a minimal value (a service with no fields) fits several kinds.
    let any = json!({"anyOf": [{"$ref": "#/components/schemas/Route"},
        {"$ref": "#/components/schemas/Service"}, {"$ref": "#/components/schemas/Upstream"},
        {"$ref": "#/components/schemas/Ssl"}, {"$ref": "#/components/schemas/Consumer"},
        {"$ref": "#/components/schemas/PluginConfig"}, {"$ref": "#/components/schemas/GlobalRule"},
        {"$ref": "#/components/schemas/ConsumerGroup"},
        {"$ref": "#/components/schemas/PluginMetadata"}]});
    let item = json!({"type": "object", "required": ["key", "value", "createdIndex", "modifiedIndex"],
        "properties": {"key": {"type": "string", "example": "/gateway/routes/1"}, "value": any,
            "createdIndex": {"type": "integer"}, "modifiedIndex": {"type": "integer"}}});
    json!({
        "Route": {"type": "object", "additionalProperties": false, "properties": route,
            "description": "Needs uri or uris, and upstream, upstream_id, service_id, plugins or plugin_config_id"},
        "Service": {"type": "object", "additionalProperties": false, "properties": service},
        "Upstream": {"type": "object", "additionalProperties": false, "required": ["nodes"], "properties": upstream},
        "Ssl": {"type": "object", "additionalProperties": false, "required": ["cert", "key"], "properties": ssl,
            "description": "Needs sni or snis; key (and keys) must match cert (and certs). \
                Responses never include key or keys"},
        "PluginConfig": {"type": "object", "additionalProperties": false, "required": ["plugins"],
            "properties": plugin_config,
            "description": "Plugins for the routes whose plugin_config_id names it; a route's own plugins win"},
        "Credential": {"type": "object", "additionalProperties": false, "required": ["plugins"],
            "properties": {"id": id, "name": {"type": "string", "maxLength": 100},
                "desc": {"type": "string", "maxLength": 256},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "plugins": {"type": "object", "minProperties": 1, "maxProperties": 1,
                    "description": "One authentication plugin's credential (key-auth, basic-auth, jwt-auth, hmac-auth); its secret is encrypted at rest and never returned"},
                "create_time": {"type": "integer"}, "update_time": {"type": "integer"}}},
        "PluginMetadata": {"type": "object",
            "description": "Shared settings of one plugin, by its name: cors takes allow_origins (name to comma-separated origins, used by allow_origins_by_metadata); limit-count takes limit_header, remaining_header, reset_header",
            "properties": {"id": {"type": "string"},
                "allow_origins": {"type": "object", "additionalProperties": {"type": "string"}},
                "limit_header": {"type": "string"}, "remaining_header": {"type": "string"},
                "reset_header": {"type": "string"},
                "create_time": {"type": "integer"}, "update_time": {"type": "integer"}}},
        "ConsumerGroup": {"type": "object", "additionalProperties": false, "required": ["plugins"],
            "properties": consumer_group,
            "description": "Plugins for the consumers whose group_id names it; a consumer's own win"},
        "GlobalRule": {"type": "object", "additionalProperties": false, "required": ["plugins"],
            "properties": global_rule, "description": "Plugins run for every request, before the route's"},
        "Consumer": {"type": "object", "additionalProperties": false, "properties": consumer,
            "description": "Credentials' secrets (key-auth.key) are encrypted at rest and never returned"},
        "PluginMeta": {"type": "object", "additionalProperties": false, "properties": {
            "priority": {"type": "integer"}, "disable": {"type": "boolean"},
            "filter": {"type": "array", "description": "A vars expression: the plugin runs only when it holds"}}},
        "Item": item,
        "List": {"type": "object", "required": ["list", "total"], "properties": {
            "list": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
            "total": {"type": "integer", "description": "How many resources of the kind exist"}}},
        "Written": {"type": "object", "required": ["key", "value"], "properties": {
            "key": {"type": "string"}, "value": any}},
        "Deleted": {"type": "object", "required": ["deleted", "key"], "properties": {
            "deleted": {"type": "string", "example": "1"}, "key": {"type": "string"}}},
        "Error": {"type": "object", "required": ["error_msg"], "properties": {
            "error_msg": {"type": "string", "example": "invalid field \"uri\": a route needs uri or uris"}}}
    })
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_method_is_documented() {
        let doc = document();
        for kind in SUPPORTED {
            let base = format!("/apisix/admin/{}", kind.as_str());
            let methods = if put_only(kind) {
                [
                    (base.clone(), &["get", "put"][..]),
                    (format!("{base}/{{id}}"), &["get", "put", "delete"][..]),
                ]
                .to_vec()
            } else {
                let collection: &[&str] = match no_post(kind) {
                    true => &["get", "put"],
                    false => &["get", "put", "post"],
                };
                [
                    (base.clone(), collection),
                    (
                        format!("{base}/{{id}}"),
                        &["get", "put", "patch", "delete"][..],
                    ),
                    (format!("{base}/{{id}}/{{path}}"), &["patch"][..]),
                ]
                .to_vec()
            };
            for (path, methods) in methods {
                for m in methods {
                    assert!(doc["paths"][&path][m].is_object(), "{m} {path}");
                }
            }
            if no_post(kind) {
                assert!(doc["paths"][&base]["post"].is_null(), "post {base}");
            }
        }
        assert!(doc["paths"]["/apisix/admin/cluster"]["get"].is_object());
        let put = &doc["paths"]["/apisix/admin/routes/{id}"]["put"];
        assert!(
            put["parameters"].to_string().contains("parameters/wait"),
            "{put}"
        );
        assert!(put["responses"]["504"].is_object());
        // Each kind's body has its own schema.
        for kind in SUPPORTED {
            let body = &doc["paths"][format!("/apisix/admin/{}", kind.as_str())]["put"];
            assert_eq!(
                body["requestBody"]["content"]["application/json"]["schema"]["$ref"],
                format!("#/components/schemas/{}", schema_name(kind))
            );
        }
        // Every $ref points at something that exists.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/").skip(1) {
            let target = &part[..part.find('"').unwrap_or(0)];
            let mut node = &doc;
            for seg in target.split('/') {
                node = &node[seg];
            }
            assert!(!node.is_null(), "dangling $ref {target}");
        }
    }
}
