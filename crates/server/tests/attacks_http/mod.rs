//! The HTTP attack suite (issue 5): real attacks against the real router over a real SQLite
//! store, and the same on PostgreSQL. Each test asserts that the attack fails, that honest users
//! keep being served, and that the attempt was counted (`AuthStats`) or audited.
//!
//! Routes of other areas are exercised through the route tables in `routes.rs`; a route that
//! does not exist yet is reported and skipped, and `openapi_get_routes_with_ids_are_all_covered`
//! fails when the OpenAPI document lists a GET route with an id the tables do not cover.

mod routes;
mod site;
mod tests;
