//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the API, generated from the route
//! table in `api/mod.rs` (the same list that registers the handlers), so it cannot drift from
//! the router.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::{PREFIX, RouteDoc, docs};
use crate::http::{ApiError, AppState, Caller};

pub(crate) async fn get(
    _caller: Caller,
    State(_state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(document()))
}

/// Path parameters of a template: `/meters/{id}/x` → `["id"]`.
pub(crate) fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn operation(d: &RouteDoc) -> Value {
    let mut params: Vec<Value> = path_params(d.path)
        .into_iter()
        .map(|p| {
            let what = if d.path.starts_with("/commands") {
                "command id"
            } else if d.path.starts_with("/customers") {
                "customer id"
            } else {
                "meter id"
            };
            json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}, "description": what})
        })
        .collect();
    params.extend(d.query.iter().map(|(name, description)| {
        json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": description})
    }));
    let success = if d.method == "post" { "201" } else { "200" };
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut op = json!({
        "operationId": format!("{}{}", d.method, d.path.replace(['/', '{', '}'], "_")),
        "summary": d.summary,
        "description": format!("Needs the `{}` role or higher.", d.role.as_str()),
        "parameters": params,
        "responses": {
            success: {"description": d.response.1, "content": {d.response.0: {"schema": {}}}},
            "400": error("a parameter or the body is wrong; the message names it"),
            "401": error("no or bad credentials"),
            "403": error("the role is not enough"),
            "404": error("no such resource, or one the caller may not see"),
        }
    });
    if let Some(schema) = d.body {
        op["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema()}}});
        op["responses"]["413"] = error("the body is larger than 64 KiB");
    }
    op
}

/// The whole document.
pub(crate) fn document() -> Value {
    let mut paths = Map::new();
    for d in docs() {
        let entry = paths
            .entry(d.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[d.method] = operation(&d);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "wattline API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The wattline data centre's JSON API (DESIGN §3.7). Times are Unix milliseconds UTC; query times also accept ISO 8601."
        },
        "servers": [{"url": PREFIX}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}
                    }}}
                }
            }
        },
        "paths": paths,
    })
}
